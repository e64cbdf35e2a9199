// Command bootkit builds the boot tier's old host image, for
// scripts/test-boot.sh and for debugging by hand:
//
//	go run ./internal/harness/boot/cmd/bootkit build   # build or reuse; print the manifest
//
// The image is cached under $CRYPTSHIFT_BOOT_CACHE (default
// ~/.cache/cryptshift/boot), keyed by the recipe.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/cryptshift/cryptshift/internal/harness/boot"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) != 2 || os.Args[1] != "build" {
		fmt.Fprintln(os.Stderr, "usage: bootkit build")
		os.Exit(2)
	}
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	oh, err := boot.EnsureOldHost(ctx, logf)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bootkit: %v\n", err)
		os.Exit(1)
	}
	b, _ := json.MarshalIndent(oh, "", "  ")
	fmt.Println(string(b))
}
