// Command multinetctl is the operator's view of a node's SR-IOV devices and the tool that
// applies a node policy.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
