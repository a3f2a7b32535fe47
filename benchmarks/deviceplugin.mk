# Device plugin benchmarks (fake sysfs tree of 8 PFs x 128 VFs); numbers in benchmarks/RESULTS.md.
.PHONY: bench-deviceplugin
bench-deviceplugin:
	$(GO) test -run '^$$' -bench . -benchmem -count 3 ./deviceplugin/
