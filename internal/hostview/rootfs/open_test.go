package rootfs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// openedNames returns the names inotify saw opened (IN_OPEN) in the watched
// directory since the last call. An O_PATH descriptor is no open of the
// file (the kernel sends no IN_OPEN for it); a read open of a FIFO or a
// device node is, and that open is what must never happen.
func openedNames(t *testing.T, fd int) []string {
	t.Helper()
	var names []string
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := string(buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)])
			// "": the watched directory itself, walked through by os.Root.
			if ev.Mask&unix.IN_OPEN != 0 && strings.TrimRight(name, "\x00") != "" {
				names = append(names, strings.TrimRight(name, "\x00"))
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
}

// TestDirOpenNeverOpensSpecialFiles: a FIFO and a character device planted
// where a config belongs (etc/crypttab as /dev/null's 1:3, etc/watchdog as
// /dev/watchdog's 10:130, whose mere open arms the machine's watchdog) are
// refused without being opened; a regular file next to them is opened (the
// oracle sees opens at all).
func TestDirOpenNeverOpensSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	etc := filepath.Join(dir, "etc")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "fstab"), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(etc, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	special := []string{"fifo"}
	// 10:130 is never created here: a node that really opened the watchdog
	// would be the failure this test exists to prevent. 1:3 (/dev/null) is
	// harmless to open and shows whether the open happened.
	if err := unix.Mknod(filepath.Join(etc, "crypttab"), unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3))); err == nil {
		special = append(special, "crypttab")
	} else {
		t.Logf("no character device without root (%v): the FIFO case stands for it", err)
	}
	in, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(in)
	if _, err := unix.InotifyAddWatch(in, etc, unix.IN_OPEN); err != nil {
		t.Fatal(err)
	}
	for _, name := range special {
		f, err := Dir(dir).Open("/etc/" + name)
		if err == nil {
			f.Close()
		}
		if !errors.Is(err, ErrNotRegular) {
			t.Errorf("Open(/etc/%s): got %v, want %v", name, err, ErrNotRegular)
		}
		if _, err := ReadFile(Dir(dir), "/etc/"+name); !errors.Is(err, ErrNotRegular) {
			t.Errorf("ReadFile(/etc/%s): got %v, want %v", name, err, ErrNotRegular)
		}
		if got := openedNames(t, in); len(got) != 0 {
			t.Errorf("/etc/%s was opened (inotify IN_OPEN for %q): the type must be checked before any open", name, got)
		}
	}
	b, err := ReadFile(Dir(dir), "/etc/fstab")
	if err != nil || string(b) != "x\n" {
		t.Fatalf("ReadFile(/etc/fstab): got %q, %v", b, err)
	}
	if got := openedNames(t, in); len(got) != 1 || got[0] != "fstab" {
		t.Errorf("opening a regular file: inotify saw %q, want [fstab] (the oracle must see opens)", got)
	}
	if _, err := Dir(dir).OpenDevice("/etc/crypttab"); err != nil && !errors.Is(err, ErrNotRegular) && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenDevice of a character device: got %v, want %v", err, ErrNotRegular)
	}
}
