// Command wrap stands in for a delegate CNI plugin in the benchmark's "share" pass: it runs the
// real plugin of the same name (the next one on CNI_PATH), passes stdin, stdout, stderr and the
// exit code through, and appends the delegate's wall time to $BENCH_DELEGATE_LOG. The benchmark
// subtracts these times from the meta-plugin's total to get the meta-plugin's own share.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

func main() {
	name := filepath.Base(os.Args[0])
	self, _ := filepath.Abs(filepath.Dir(os.Args[0]))
	real := ""
	for _, d := range filepath.SplitList(os.Getenv("BENCH_REAL_PATH")) {
		if p := filepath.Join(d, name); d != self {
			if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
				real = p
				break
			}
		}
	}
	if real == "" {
		fmt.Fprintf(os.Stderr, "wrap: no real %s on BENCH_REAL_PATH\n", name)
		os.Exit(1)
	}
	cmd := exec.Command(real, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if f, ferr := os.OpenFile(os.Getenv("BENCH_DELEGATE_LOG"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); ferr == nil {
		// One short line per write: O_APPEND keeps concurrent writers' lines whole.
		fmt.Fprintf(f, "%s %s %s %d\n", os.Getenv("CNI_CONTAINERID"), os.Getenv("CNI_COMMAND"), name, d.Nanoseconds())
		f.Close()
	}
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			os.Exit(ee.ExitCode())
		}
		fmt.Fprintf(os.Stderr, "wrap: %s: %v\n", real, err)
		os.Exit(1)
	}
}
