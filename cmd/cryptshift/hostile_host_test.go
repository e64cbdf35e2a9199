package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/audit/verify/hostiletest"
	"github.com/cryptshift/cryptshift/internal/harness/testtier"
)

// TestHostVerifyReadsOnlyTheRoot runs the real binary on a tree with every
// hostile change at once, under strace, and checks every file it opened,
// or tried to open, against the root: nothing outside it is touched except
// what the Go runtime itself reads (/sys/kernel/mm/transparent_hugepage)
// and its own /proc/self. An independent oracle for the canary test in
// internal/audit/verify: the kernel's record of the opens.
func TestHostVerifyReadsOnlyTheRoot(t *testing.T) {
	testtier.Host(t, "strace")
	dir := t.TempDir()
	var cases []hostiletest.Case
	for _, c := range hostiletest.Cases() {
		if c.Name != "gzip-bomb-initramfs" { // nested-gzip replaces the same file
			cases = append(cases, c)
		}
	}
	root, _, err := hostiletest.Tree(dir, cases...)
	if err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "strace.log")
	for _, verb := range [][]string{{"verify", "--root", root, "-o", "json"}, {"inspect", "--root", root}, {"capture", "--root", root, filepath.Join(dir, "cap")}} {
		cmd := exec.Command("strace", append([]string{"-f", "-y", "-qq", "-e", "trace=open,openat,openat2,execve", "-o", log, binary}, verb...)...)
		outb, _ := cmd.CombinedOutput()
		b, err := os.ReadFile(log)
		if err != nil {
			t.Fatalf("%v: no strace log: %v\n%s", verb, err, outb)
		}
		checkOpens(t, verb[0], string(b), []string{root, filepath.Join(dir, "cap")})
		if strings.Contains(string(outb), "CANARY") {
			t.Errorf("%s printed the canary", verb[0])
		}
	}
}

var openRE = regexp.MustCompile(`open(?:at2?)?\((?:(AT_FDCWD|\d+<([^>]*)>), )?"([^"]*)"`)

func checkOpens(t *testing.T, verb, log string, roots []string) {
	t.Helper()
	self, _ := filepath.Abs(binary)
	allowed := append([]string{"/sys/kernel/mm/transparent_hugepage/", "/proc/self/", "/dev/null", self, "/etc/localtime", "/usr/share/zoneinfo/"}, roots...)
	n := 0
	for _, m := range openRE.FindAllStringSubmatch(log, -1) {
		p := m[3]
		if !strings.HasPrefix(p, "/") {
			p = filepath.Join(m[2], p)
		}
		if regexp.MustCompile(`^/proc/\d+/`).MatchString(p) {
			continue // this process's own /proc entries
		}
		n++
		ok := false
		for _, a := range allowed {
			if p == strings.TrimSuffix(a, "/") || strings.HasPrefix(p, strings.TrimSuffix(a, "/")+"/") {
				ok = true
			}
		}
		if !ok {
			t.Errorf("%s opened %s, outside the root", verb, p)
		}
	}
	t.Logf("%s: %d opens checked", verb, n)
	if n < 20 {
		t.Errorf("%s: only %d opens in the strace log: the oracle saw nothing", verb, n)
	}
}
