package verify

import (
	"bytes"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/audit/verify/hostiletest"
	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
)

// memFS is a tree in memory for fuzzing the tree reader: files, links
// and directories decoded from the fuzzer's bytes.
type memFS map[string]memEntry

type memEntry struct {
	kind byte // 'F' file, 'L' link, 'D' dir, 'P' FIFO
	data string
}

// Encoding: entries separated by 0x1e; each is KIND PATH 0x1f DATA.
func decodeTree(b []byte) memFS {
	m := memFS{"/": {kind: 'D'}}
	for _, e := range bytes.Split(b, []byte{0x1e}) {
		if len(e) < 2 {
			continue
		}
		p, data, _ := bytes.Cut(e[1:], []byte{0x1f})
		name := rootfs.Clean(string(p))
		for d := path.Dir(name); d != "/"; d = path.Dir(d) {
			if _, ok := m[d]; !ok {
				m[d] = memEntry{kind: 'D'}
			}
		}
		m[name] = memEntry{kind: e[0], data: string(data)}
	}
	return m
}

func encodeTree(root string) []byte {
	var b bytes.Buffer
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == root {
			return nil
		}
		rel := "/" + filepath.ToSlash(strings.TrimPrefix(p, root+"/"))
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			t, _ := os.Readlink(p)
			b.WriteString("\x1eL" + rel + "\x1f" + t)
		case fi.IsDir():
			b.WriteString("\x1eD" + rel)
		default:
			c, _ := os.ReadFile(p)
			if len(c) > 4096 {
				c = c[:4096]
			}
			b.WriteString("\x1eF" + rel + "\x1f" + string(c))
		}
		return nil
	})
	return b.Bytes()
}

type memInfo struct {
	name string
	e    memEntry
}

func (i memInfo) Name() string { return path.Base(i.name) }
func (i memInfo) Size() int64  { return int64(len(i.e.data)) }
func (i memInfo) Mode() fs.FileMode {
	switch i.e.kind {
	case 'L':
		return fs.ModeSymlink | 0o777
	case 'D':
		return fs.ModeDir | 0o755
	case 'P':
		return fs.ModeNamedPipe | 0o644
	}
	return 0o644
}
func (i memInfo) ModTime() time.Time         { return time.Time{} }
func (i memInfo) IsDir() bool                { return i.e.kind == 'D' }
func (i memInfo) Sys() any                   { return nil }
func (i memInfo) Type() fs.FileMode          { return i.Mode().Type() }
func (i memInfo) Info() (fs.FileInfo, error) { return i, nil }

func (m memFS) Lstat(name string) (fs.FileInfo, error) {
	e, ok := m[rootfs.Clean(name)]
	if !ok {
		return nil, &fs.PathError{Op: "lstat", Path: name, Err: fs.ErrNotExist}
	}
	return memInfo{rootfs.Clean(name), e}, nil
}

func (m memFS) Readlink(name string) (string, error) {
	e, ok := m[rootfs.Clean(name)]
	if !ok || e.kind != 'L' {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
	}
	return e.data, nil
}

func (m memFS) ReadDir(name string) ([]fs.DirEntry, error) {
	dir := rootfs.Clean(name)
	if e, ok := m[dir]; !ok || e.kind != 'D' {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrNotExist}
	}
	var out []fs.DirEntry
	for p, e := range m {
		if p != "/" && path.Dir(p) == dir {
			out = append(out, memInfo{p, e})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

func (m memFS) Open(name string) (rootfs.File, error) {
	e, ok := m[rootfs.Clean(name)]
	switch {
	case !ok:
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	case e.kind != 'F':
		return nil, &fs.PathError{Op: "open", Path: name, Err: rootfs.ErrNotRegular}
	}
	return memFile{bytes.NewReader([]byte(e.data))}, nil
}

// FuzzTreeReader feeds verify trees built from the fuzzer's bytes (seeded
// with a fixture and the hostile base tree): whatever the tree, verify
// returns a report or an error, never panics and never loops.
func FuzzTreeReader(f *testing.F) {
	f.Add(encodeTree(filepath.Join(fixtureDir, "swap-plain-partition", "root")))
	dir := f.TempDir()
	if err := hostiletest.Base(filepath.Join(dir, "root")); err == nil {
		f.Add(encodeTree(filepath.Join(dir, "root")))
	}
	f.Add([]byte("\x1eF/proc/swaps\x1f\x1eF/proc/self/mountinfo\x1f1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\x1eD/sys/class/block\x1eL/sys/class/block/sda1\x1f../../x\x1eL/etc/fstab\x1f/etc/fstab"))
	empty := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 64<<10 {
			return // keep each run quick: a 64 KiB gzip still unpacks to 64 MiB
		}
		live := false
		r, err := Run(Options{Root: empty, FS: decodeTree(b), Live: &live, Version: "fuzz"})
		if err == nil {
			var out bytes.Buffer
			if err := Render(&out, r, "text"); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// FuzzVerifyImage feeds verify --image arbitrary image files.
func FuzzVerifyImage(f *testing.F) {
	f.Add(make([]byte, 1<<16))
	f.Add(hostiletest.QCOW2("x", 0))
	f.Add(hostiletest.LUKS2WithoutNUL())
	mbr := make([]byte, 1<<16)
	mbr[510], mbr[511] = 0x55, 0xaa
	mbr[446+4], mbr[446+8], mbr[446+12] = 0x83, 1, 64
	f.Add(mbr)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 4<<20 {
			return
		}
		p := filepath.Join(dir, "img")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if r, err := Run(Options{Image: p, Version: "fuzz"}); err == nil && r.Summary.Verdict == Pass {
			t.Fatalf("PASS for a fuzzed image")
		}
	})
}
