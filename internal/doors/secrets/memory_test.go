package secrets

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// vmFlags returns the VmFlags the kernel shows in /proc/self/smaps for the
// mapping that holds addr: "lo" is locked (mlock), "dd" is excluded from
// core dumps (MADV_DONTDUMP). The kernel's own account is the oracle.
func vmFlags(t *testing.T, addr uintptr) string {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		var lo, hi uintptr
		if n, _ := fmt.Sscanf(l, "%x-%x ", &lo, &hi); n == 2 && strings.Contains(l, " ") && !strings.Contains(l[:strings.IndexByte(l, ' ')], ":") {
			in = addr >= lo && addr < hi
			continue
		}
		if in && strings.HasPrefix(l, "VmFlags:") {
			return l
		}
	}
	t.Fatalf("no mapping holds %#x", addr)
	return ""
}

func addrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// Secrets read from a file, typed, or generated live in locked memory that
// core dumps leave out, and trailing newlines are wiped, not just cut off.
func TestSecretsAreLockedAndUndumpable(t *testing.T) {
	p := filepath.Join(t.TempDir(), "pass")
	os.WriteFile(p, []byte("correct horse\n\n"), 0o600)
	pass, err := FromFile(p)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := NewRecoveryKey()
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"passphrase": pass, "recovery key": rk} {
		fl := vmFlags(t, addrOf(b))
		if !strings.Contains(fl, " lo") || !strings.Contains(fl, " dd") {
			t.Errorf("%s: the kernel shows %q; want lo (locked) and dd (not dumped)", name, fl)
		}
	}
	if string(pass) != "correct horse" {
		t.Fatalf("got %q", pass)
	}
	if tail := pass[len(pass) : len(pass)+2]; tail[0] != 0 || tail[1] != 0 {
		t.Errorf("the trimmed newlines are still in memory: %q", tail)
	}
	Wipe(pass)
	if string(pass) != strings.Repeat("\x00", len("correct horse")) {
		t.Errorf("Wipe left %q", pass)
	}
}

// A passphrase larger than the first buffer grows into new locked memory;
// the smaller copies are unmapped (their pages wiped first).
func TestReadAllGrows(t *testing.T) {
	want := strings.Repeat("0123456789abcdef", 1000) // 16000 bytes
	b, err := readAll(strings.NewReader(want+"\n"), "test", true)
	if err != nil || string(b) != want {
		t.Fatalf("got %d bytes, %v", len(b), err)
	}
	if fl := vmFlags(t, addrOf(b)); !strings.Contains(fl, " lo") {
		t.Errorf("got %q", fl)
	}
	if _, err := readAll(strings.NewReader(strings.Repeat("x", MaxLen+1)), "big", true); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("got %v", err)
	}
}

// When the system refuses to lock memory, the secret is still kept apart,
// and one warning (not one per secret) says what that means and what to do.
func TestLockRefusedWarnsOnce(t *testing.T) {
	var mu sync.Mutex
	var warnings []string
	t.Cleanup(setMemoryLock(func([]byte) error { return unix.EPERM },
		func(m string) { mu.Lock(); warnings = append(warnings, m); mu.Unlock() }))
	for i := 0; i < 3; i++ {
		k, err := NewRecoveryKey()
		if err != nil || len(k) != 47 {
			t.Fatalf("got %q, %v", k, err)
		}
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "cannot lock secrets into memory (mlock: operation not permitted; RLIMIT_MEMLOCK is") ||
		!strings.Contains(warnings[0], "may write a passphrase or key to swap; raise the limit (ulimit -l, LimitMEMLOCK=) or run as root, and keep swap encrypted") {
		t.Fatalf("got %q", warnings)
	}
}

// Harden, in a process of its own: the kernel's /proc/PID/limits shows no
// core dumps (soft and hard), and prctl says the process is not dumpable.
func TestHardenDisablesCoreDumps(t *testing.T) {
	if os.Getenv("CRYPTSHIFT_HARDEN_CHILD") == "1" {
		if err := Harden(); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		d, _ := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
		fmt.Printf("dumpable=%d\n", d)
		os.Stdin.Read(make([]byte, 1)) // wait until the parent has looked
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestHardenDisablesCoreDumps$")
	cmd.Env = append(os.Environ(), "CRYPTSHIFT_HARDEN_CHILD=1")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if line != "dumpable=0\n" {
		t.Fatalf("child says %q", line)
	}
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var core string
	for _, l := range strings.Split(string(limits), "\n") {
		if strings.HasPrefix(l, "Max core file size") {
			core = strings.Join(strings.Fields(l), " ")
		}
	}
	if core != "Max core file size 0 0 bytes" {
		t.Fatalf("got %q", core)
	}
}
