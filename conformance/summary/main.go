// Command summary prints the conformance tier's summary line from the results the packages'
// conformance tests wrote, and fails when a case was not judged or a deviation names no case.
package main

import (
	"fmt"
	"os"

	"github.com/multinet-io/multinet/conformance"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: summary <results dir>")
		os.Exit(2)
	}
	dir, err := conformance.Dir()
	if err == nil {
		_, err = os.Stat(dir)
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			fmt.Fprintf(os.Stderr, "conformance: corpus not found: %v (set %s)\n", err, conformance.EnvDir)
			os.Exit(1)
		}
		fmt.Printf("conformance: skipped, corpus not found (%v); set %s\n", err, conformance.EnvDir)
		return
	}
	line, err := conformance.Summary(dir, os.Args[1])
	fmt.Println(line)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
