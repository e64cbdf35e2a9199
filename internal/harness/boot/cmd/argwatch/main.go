// Command argwatch runs inside a booted test guest and records every
// argument of every process's command line while the file named by its
// first argument exists, polling /proc every 10 ms; it then writes the
// distinct arguments, one a line and sorted, to the file named by its
// second argument (through a temporary file and a rename, so a reader
// never sees half of it).
//
// The boot tier uses it to prove that no secret is ever on a command
// line. It replaces a shell loop that started three processes every
// 50 ms: under TCG that loop took most of a virtual CPU away from the
// apply it watched and could still miss a short-lived process between
// two polls.
//
//	argwatch /run/watch /run/cmdlines.txt &
package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: argwatch WHILE-FILE-EXISTS OUTPUT")
		os.Exit(2)
	}
	while, out := os.Args[1], os.Args[2]
	seen := map[string]bool{}
	for {
		poll(seen)
		if _, err := os.Stat(while); err != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	poll(seen) // what ran until the stop
	args := make([]string, 0, len(seen))
	for a := range seen {
		args = append(args, a)
	}
	sort.Strings(args)
	var b bytes.Buffer
	for _, a := range args {
		b.WriteString(a)
		b.WriteByte('\n')
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "argwatch:", err)
		os.Exit(1)
	}
	if err := os.Rename(tmp, out); err != nil {
		fmt.Fprintln(os.Stderr, "argwatch:", err)
		os.Exit(1)
	}
}

// poll adds the arguments of every process now running to seen. A
// process that exits between the listing and the read is simply gone.
func poll(seen map[string]bool) {
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, a := range bytes.Split(b, []byte{0}) {
			if len(a) > 0 {
				seen[string(a)] = true
			}
		}
	}
}
