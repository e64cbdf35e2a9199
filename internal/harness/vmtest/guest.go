package vmtest

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/harness/testtier"
)

// InGuest runs the calling test inside the VM. Inside the VM it returns
// true at once and the test carries on as root with real dm-crypt, LVM and
// loop devices. On the host it boots the VM, runs this same test binary
// there with only this test selected (-test.run '^Name$' -test.v), relays
// the guest's output into t.Log, passes, skips or fails t as the guest test
// did, and returns false: the host side of the test must return.
//
//	func TestVMSomething(t *testing.T) {
//		testtier.VM(t, "qemu-system-x86_64")
//		if !vmtest.InGuest(t) {
//			return
//		}
//		// root in the VM from here on
//	}
//
// Nothing is compiled: the guest runs the very binary `go test` built (a
// hard link or copy of os.Executable() staged in the cache directory), in
// the same working directory, so testdata/ resolves as on the host.
//
// With CRYPTSHIFT_VM_BATCH=1 (scripts/test-vm.sh sets it) the first TestVM
// test that calls InGuest boots one VM for every TestVM test the host's
// -test.run selects, and each test then reports its own result from that
// run: one boot per package instead of one per test. That runs host-side
// TestVM tests (ones that call Run themselves) in the guest too, so they
// must skip there: if testtier.InVM() { t.Skip("host-side test") }.
func InGuest(t *testing.T) bool {
	t.Helper()
	if testtier.InVM() {
		return true
	}
	var gt *guestTest
	var vm vmRun
	if os.Getenv("CRYPTSHIFT_VM_BATCH") == "1" {
		gt, vm = batchResult(t)
	}
	if gt == nil && vm.err == nil {
		var res map[string]*guestTest
		res, vm = runTestsInVM(t, []string{t.Name()})
		gt = res[t.Name()]
	}
	report(t, gt, vm)
	return false
}

// guestTest is one test's result as the guest's `go test -v` output told it.
type guestTest struct {
	Status string // PASS, FAIL or SKIP; empty if the binary never said
	Output []byte
}

// vmRun is what one boot of the test binary reported as a whole.
type vmRun struct {
	code   int // the guest test binary's exit status
	queued time.Duration
	boot   time.Duration
	total  time.Duration
	err    error
}

func (v vmRun) timing() string {
	return fmt.Sprintf("waited %.1fs for a VM slot, booted to the test binary in %.1fs, VM ran %.1fs", v.queued.Seconds(), v.boot.Seconds(), v.total.Seconds())
}

func report(t *testing.T, gt *guestTest, vm vmRun) {
	t.Helper()
	var out []byte
	if gt != nil {
		out = gt.Output
	}
	if vm.err != nil {
		t.Fatalf("cannot run %s in the VM: %v\nguest output:\n%s", t.Name(), vm.err, out)
	}
	switch {
	case gt == nil || gt.Status == "":
		t.Fatalf("the VM reported no result for %s (test binary exit status %d); was the test renamed or did the binary crash?\nguest output:\n%s", t.Name(), vm.code, out)
	case gt.Status == "SKIP":
		t.Skipf("skipped in the VM:\n%s", out)
	case gt.Status == "FAIL":
		t.Fatalf("failed in the VM (test binary exit status %d; %s):\n%s", vm.code, vm.timing(), out)
	default:
		t.Logf("passed in the VM (%s):\n%s", vm.timing(), out)
	}
}

var batch struct {
	sync.Mutex
	done    bool
	results map[string]*guestTest
	vm      vmRun
	names   map[string]bool
}

// batchResult runs every selected TestVM test of this binary in one VM the
// first time it is called and hands out each test's own result. A test not
// in the batch (a subtest, or a filter the batch could not reproduce) gets
// gt == nil and boots its own VM.
func batchResult(t *testing.T) (*guestTest, vmRun) {
	batch.Lock()
	defer batch.Unlock()
	if !batch.done {
		batch.done = true
		names, err := batchNames(t.Name())
		if err != nil {
			t.Logf("cannot batch the VM tests, running one VM per test: %v", err)
			return nil, vmRun{}
		}
		batch.names = map[string]bool{}
		for _, n := range names {
			batch.names[n] = true
		}
		t.Logf("running %d VM tests in one boot: %s", len(names), strings.Join(names, " "))
		batch.results, batch.vm = runTestsInVM(t, names)
	}
	if !batch.names[t.Name()] {
		return nil, vmRun{}
	}
	return batch.results[t.Name()], batch.vm
}

// batchNames lists the top-level TestVM tests the host's -test.run and
// -test.skip select, asking the binary itself (-test.list).
func batchNames(current string) ([]string, error) {
	if strings.Contains(current, "/") {
		return nil, fmt.Errorf("%s is a subtest", current)
	}
	runFlag, skipFlag := flagValue("test.run"), flagValue("test.skip")
	if strings.Contains(runFlag, "/") || strings.Contains(skipFlag, "/") {
		return nil, fmt.Errorf("-run %q / -skip %q select subtests", runFlag, skipFlag)
	}
	bin, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("cannot find the test binary: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := run(ctx, bin, "-test.list", "^TestVM")
	if err != nil {
		return nil, err
	}
	return selectTests(out, runFlag, skipFlag, current)
}

// selectTests keeps the names from -test.list output that -run selects and
// -skip does not, as `go test` would at the top level.
func selectTests(list []byte, run, skip, current string) ([]string, error) {
	var runRE, skipRE *regexp.Regexp
	var err error
	if run != "" {
		if runRE, err = regexp.Compile(run); err != nil {
			return nil, fmt.Errorf("cannot parse -run %q: %w", run, err)
		}
	}
	if skip != "" {
		if skipRE, err = regexp.Compile(skip); err != nil {
			return nil, fmt.Errorf("cannot parse -skip %q: %w", skip, err)
		}
	}
	var names []string
	found := false
	for _, n := range strings.Fields(string(list)) {
		if !strings.HasPrefix(n, "TestVM") || (runRE != nil && !runRE.MatchString(n)) || (skipRE != nil && skipRE.MatchString(n)) {
			continue
		}
		names = append(names, n)
		found = found || n == current
	}
	if !found {
		return nil, fmt.Errorf("-test.list does not select %s", current)
	}
	return names, nil
}

func flagValue(name string) string {
	if f := flag.Lookup(name); f != nil {
		return f.Value.String()
	}
	return ""
}

// runTestsInVM boots the VM once and runs the named tests of this binary
// in it, bounded by the host test's own deadline.
func runTestsInVM(t *testing.T, names []string) (map[string]*guestTest, vmRun) {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		return nil, vmRun{err: fmt.Errorf("cannot find the test binary: %w", err)}
	}
	guestBin, cleanup, err := stageBinary(bin)
	if err != nil {
		return nil, vmRun{err: err}
	}
	defer cleanup()
	timeout := 20 * time.Minute
	if dl, ok := t.Deadline(); ok {
		// Leave the host time to report; a stuck guest is killed first.
		timeout = time.Until(dl) - 15*time.Second
	}
	if timeout < time.Minute {
		return nil, vmRun{err: fmt.Errorf("only %s left before the test deadline", timeout.Round(time.Second))}
	}
	args := []string{guestBin,
		"-test.run", runPattern(names),
		"-test.v=true",
		"-test.count=1",
		// The guest binary times out (and prints its goroutines) before
		// the VM is killed, so a hang is diagnosable.
		"-test.timeout", (timeout - 30*time.Second).String(),
	}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	// One spare disk for tests that need a real, unencrypted disk in the
	// guest (a plaintext swap file verify must FAIL, for instance).
	o := Options{Args: args, Timeout: timeout, SpareDisks: []int64{256 << 20}}
	if os.Getenv("CRYPTSHIFT_VM_CONSOLE") == "1" {
		o.Console = os.Stderr
	}
	// Queueing for a VM slot eats into the same budget.
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := Run(ctx, o)
	results := parseTestOutput(res.Output)
	vm := vmRun{code: res.ExitCode, queued: res.Queued, boot: res.Boot, total: res.Duration}
	if err != nil {
		// Hand every test what the guest managed to say.
		for _, n := range names {
			if results[n] == nil {
				results[n] = &guestTest{}
			}
			if len(results[n].Output) == 0 {
				results[n].Output = res.Output
			}
		}
		vm.err = fmt.Errorf("%w (%s); console tail: %s", err, vm.timing(), lastLines(res.Console, 10))
		return results, vm
	}
	return results, vm
}

// runPattern selects exactly the named tests: "^(A|B)$", with subtest
// names split at "/" as -test.run expects ("^A$/^sub$").
func runPattern(names []string) string {
	if len(names) == 1 {
		parts := strings.Split(names[0], "/")
		for i, p := range parts {
			parts[i] = "^" + regexp.QuoteMeta(p) + "$"
		}
		return strings.Join(parts, "/")
	}
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = regexp.QuoteMeta(n)
	}
	return "^(" + strings.Join(q, "|") + ")$"
}

var resultLine = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+) \(`)

// parseTestOutput splits `go test -v` output by test. "=== RUN", "=== CONT"
// and "=== NAME" say whose output follows (Go prints them whenever output
// switches tests, so parallel tests stay attributable); "--- PASS/FAIL/SKIP:"
// lines give results. Output is credited to the test and its parents, so a
// top-level test's output includes its subtests'.
func parseTestOutput(out []byte) map[string]*guestTest {
	res := map[string]*guestTest{}
	get := func(n string) *guestTest {
		if res[n] == nil {
			res[n] = &guestTest{}
		}
		return res[n]
	}
	credit := func(n, line string) {
		for n != "" {
			g := get(n)
			g.Output = append(g.Output, line...)
			g.Output = append(g.Output, '\n')
			i := strings.LastIndex(n, "/")
			if i < 0 {
				break
			}
			n = n[:i]
		}
	}
	current := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64*1024), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, p := range []string{"=== RUN", "=== CONT", "=== NAME", "=== PAUSE"} {
			if rest, ok := strings.CutPrefix(line, p); ok {
				current = strings.TrimSpace(rest)
			}
		}
		if m := resultLine.FindStringSubmatch(line); m != nil {
			get(m[2]).Status = m[1]
			credit(m[2], line)
			continue
		}
		credit(current, line)
	}
	return res
}

// stageBinary puts the test binary where the guest can read it fast.
// `go test` builds it under /tmp, which the guest covers with its own
// tmpfs; a read-write 9p share would do, but it is uncached and exec'ing a
// binary from it cost about a second. The host root is mounted read-only
// with cache=loose, so a hard link in the cache directory reads at page
// cache speed.
func stageBinary(bin string) (string, func(), error) {
	cache, err := CacheDir()
	if err != nil {
		return "", nil, err
	}
	if err := os.MkdirAll(filepath.Join(cache, "bin"), 0o755); err != nil {
		return "", nil, fmt.Errorf("cannot stage the test binary: %w", err)
	}
	dir, err := os.MkdirTemp(filepath.Join(cache, "bin"), "")
	if err != nil {
		return "", nil, fmt.Errorf("cannot stage the test binary: %w", err)
	}
	cleanup := func() { os.RemoveAll(dir) }
	staged := filepath.Join(dir, filepath.Base(bin))
	if err := linkOrCopy(bin, staged); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("cannot stage the test binary: %w", err)
	}
	return staged, cleanup, nil
}

// linkOrCopy hard-links src to dst, copying when they are on different
// filesystems.
func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
