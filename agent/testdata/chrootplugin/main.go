// Command chrootplugin is a static CNI plugin for the delegate-chroot test: its ADD result
// names an interface after /etc/chroot-marker, a file that exists only inside the test's
// chroot, so the result tells where the plugin ran. DEL fails with a CNI error.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

func main() {
	io.Copy(io.Discard, os.Stdin)
	switch os.Getenv("CNI_COMMAND") {
	case "VERSION":
		fmt.Print(`{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}`)
	case "ADD":
		b, err := os.ReadFile("/etc/chroot-marker")
		if err != nil {
			fmt.Printf(`{"cniVersion":"1.0.0","code":11,"msg":%q}`, err.Error())
			os.Exit(1)
		}
		fmt.Printf(`{"cniVersion":"1.0.0","interfaces":[{"name":%q}]}`, strings.TrimSpace(string(b)))
	case "DEL":
		fmt.Print(`{"cniVersion":"1.0.0","code":7,"msg":"chroot plugin refuses DEL"}`)
		os.Exit(1)
	}
}
