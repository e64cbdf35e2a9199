// Command vmkit builds the VM test kit and runs commands in the test VM, for
// scripts/test-vm.sh and for debugging the harness by hand:
//
//	go run ./vmtest/cmd/vmkit build            # build or reuse the kit, print it
//	go run ./vmtest/cmd/vmkit run -- sh -c 'cryptsetup --version; lsmod'
//
// run exits with the guest command's status (or 125 when the VM itself
// failed), prints the command's output and, with -console, the serial
// console live on stderr.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cryptshift/cryptshift/internal/harness/vmtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := realMain(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

func realMain(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: vmkit build | vmkit run [flags] -- COMMAND [ARGS...]")
		return 2
	}
	switch args[0] {
	case "build":
		kit, err := vmtest.EnsureKit(ctx)
		if err != nil {
			fmt.Fprintf(os.Stderr, "vmkit: %v\n", err)
			return 1
		}
		b, _ := json.MarshalIndent(kit, "", "  ")
		fmt.Println(string(b))
		return 0
	case "run":
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		var o vmtest.Options
		console := fs.Bool("console", false, "copy the serial console to stderr as it happens")
		fs.StringVar(&o.CPU, "cpu", "", "qemu -cpu model (default max)")
		fs.StringVar(&o.Share, "share", "", "host directory mounted read-write at the same path in the guest")
		fs.IntVar(&o.MemoryMiB, "m", 0, "guest memory in MiB (default 2048)")
		fs.IntVar(&o.CPUs, "smp", 0, "guest CPUs (default 2)")
		fs.DurationVar(&o.Timeout, "timeout", 10*time.Minute, "kill the VM after this long")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		o.Args = fs.Args()
		if *console {
			o.Console = os.Stderr
		}
		res, err := vmtest.Run(ctx, o)
		os.Stdout.Write(res.Output)
		fmt.Fprintf(os.Stderr, "vmkit: queued %.2fs, boot %.2fs, total %.2fs, exit status %d\n", res.Queued.Seconds(), res.Boot.Seconds(), res.Duration.Seconds(), res.ExitCode)
		if len(res.ModulesFailed) > 0 {
			fmt.Fprintf(os.Stderr, "vmkit: modules that did not load: %v\n", res.ModulesFailed)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "vmkit: %v\n", err)
			return 125
		}
		return res.ExitCode
	}
	fmt.Fprintf(os.Stderr, "vmkit: unknown command %q\n", args[0])
	return 2
}
