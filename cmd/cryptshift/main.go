// Command cryptshift plans, applies, migrates onto and verifies LUKS-on-LVM
// full-disk encryption for Linux hosts and their libvirt guests.
package main

import (
	"fmt"
	"os"

	"github.com/cryptshift/cryptshift/internal/exitcode"
)

func main() {
	err := newRootCmd().Execute()
	if err != nil {
		fmt.Fprintf(os.Stderr, "cryptshift: %v\n", err)
	}
	os.Exit(exitcode.Of(err))
}
