// Command copybench runs the copier the way migrate does, for
// scripts/bench-copy.sh: copy SRC onto the existing DST and verify, then
// print one JSON line with the result and the wall time. It exists so the
// benchmark does not depend on the CLI.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"github.com/cryptshift/cryptshift/internal/runner/copier"
)

func main() {
	var opt copier.Options
	mode := flag.String("verify", "behind", "verification: behind (re-read each chunk during the copy), after (copier.Hash of the target after the copy) or none")
	flag.IntVar(&opt.ChunkSize, "chunk", 0, "chunk size in bytes (0: default)")
	flag.IntVar(&opt.Depth, "depth", 0, "chunks in flight (0: default)")
	flag.IntVar(&opt.Readers, "readers", 0, "concurrent reads (0: default)")
	flag.IntVar(&opt.Writers, "writers", 0, "concurrent writes (0: default)")
	flag.BoolVar(&opt.Buffered, "buffered", false, "no O_DIRECT")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "copybench:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: copybench [flags] SRC DST")
		os.Exit(2)
	}
	src, dst := flag.Arg(0), flag.Arg(1)
	opt.Verify = *mode == "behind"
	ctx := context.Background()
	t0 := time.Now()
	res, err := copier.Copy(ctx, src, dst, opt)
	if err != nil {
		fmt.Fprintln(os.Stderr, "copybench:", err)
		os.Exit(1)
	}
	tCopy := time.Since(t0)
	if *mode == "after" {
		sum, err := copier.Hash(ctx, dst, res.Size, copier.HashOptions{ChunkSize: opt.ChunkSize, Depth: opt.Depth, Readers: opt.Readers, Buffered: opt.Buffered})
		if err != nil {
			fmt.Fprintln(os.Stderr, "copybench:", err)
			os.Exit(1)
		}
		if sum != res.SHA256 {
			fmt.Fprintf(os.Stderr, "copybench: cannot verify %s: sha256 %s, source %s\n", dst, sum, res.SHA256)
			pprof.StopCPUProfile()
			os.Exit(1)
		}
		res.Verified = true
	}
	json.NewEncoder(os.Stdout).Encode(struct {
		copier.Result
		Mode        string  `json:"verify_mode"`
		CopySeconds float64 `json:"copy_seconds"`
		Seconds     float64 `json:"seconds"`
	}{res, *mode, tCopy.Seconds(), time.Since(t0).Seconds()})
}
