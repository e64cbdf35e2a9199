// Command mkdist builds cryptshift's release artifacts into a directory:
// static binaries, a Debian package per architecture and SHA256SUMS.
// "make dist" runs it from the repository root.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/cryptshift/cryptshift/packaging"
)

func main() {
	var b packaging.Build
	var arches, epoch string
	flag.StringVar(&b.Out, "out", "dist", "output `DIR`")
	flag.StringVar(&b.Version, "version", "", "version as git describe prints it (default: git describe --tags --always --dirty)")
	flag.StringVar(&b.Commit, "commit", "", "commit hash (default: git rev-parse HEAD)")
	flag.StringVar(&arches, "arch", "amd64,arm64", "comma-separated GOARCH `LIST`")
	flag.StringVar(&epoch, "date", os.Getenv("SOURCE_DATE_EPOCH"), "build time as Unix `SECONDS` (default: $SOURCE_DATE_EPOCH, else the commit time)")
	flag.StringVar(&b.Maintainer, "maintainer", packaging.DefaultMaintainer, "the package's Maintainer field")
	flag.Parse()
	if err := run(&b, arches, epoch); err != nil {
		fmt.Fprintf(os.Stderr, "mkdist: %v\n", err)
		os.Exit(1)
	}
}

func run(b *packaging.Build, arches, epoch string) error {
	var err error
	if b.Repo, err = os.Getwd(); err != nil {
		return fmt.Errorf("cannot find the repository: %w", err)
	}
	if b.Version == "" {
		b.Version = git("dev", "describe", "--tags", "--always", "--dirty")
	}
	if b.Commit == "" {
		b.Commit = git("unknown", "rev-parse", "HEAD")
	}
	if epoch == "" {
		epoch = git("", "log", "-1", "--format=%ct")
	}
	b.Date = time.Unix(0, 0).UTC()
	if epoch != "" {
		s, err := strconv.ParseInt(epoch, 10, 64)
		if err != nil {
			return fmt.Errorf("cannot use build time %q: not Unix seconds", epoch)
		}
		b.Date = time.Unix(s, 0).UTC()
	}
	for _, a := range strings.Split(arches, ",") {
		if a = strings.TrimSpace(a); a != "" {
			b.Arches = append(b.Arches, a)
		}
	}
	start := time.Now()
	a, err := b.All(context.Background())
	if err != nil {
		return err
	}
	for _, n := range append(append(a.Binaries, a.Debs...), a.Sums) {
		fmt.Printf("%s/%s\n", b.Out, n)
	}
	fmt.Fprintf(os.Stderr, "mkdist: %s %s in %s\n", b.Version, packaging.DebianVersion(b.Version), time.Since(start).Round(time.Second))
	return nil
}

func git(fallback string, args ...string) string {
	out, err := exec.Command("git", args...).Output()
	if err != nil {
		return fallback
	}
	return strings.TrimSpace(string(out))
}
