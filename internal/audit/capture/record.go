package capture

import (
	"io/fs"
	"sort"
	"sync"

	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
)

// access is what verify did with one path.
type access struct {
	lstat   bool
	readdir bool
	open    bool
}

// recorder wraps a live root and remembers every path verify looks at, so
// that capture copies exactly what verify reads: a captured tree then gives
// the same answers by construction, not by keeping two lists in step.
type recorder struct {
	rootfs.Dir
	mu   sync.Mutex
	seen map[string]*access
}

func newRecorder(d rootfs.Dir) *recorder { return &recorder{Dir: d, seen: map[string]*access{}} }

func (r *recorder) note(name string, f func(a *access)) {
	name = rootfs.Clean(name)
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.seen[name]
	if a == nil {
		a = &access{}
		r.seen[name] = a
	}
	f(a)
}

func (r *recorder) Lstat(name string) (fs.FileInfo, error) {
	r.note(name, func(a *access) { a.lstat = true })
	return r.Dir.Lstat(name)
}

func (r *recorder) Readlink(name string) (string, error) {
	r.note(name, func(a *access) { a.lstat = true })
	return r.Dir.Readlink(name)
}

func (r *recorder) ReadDir(name string) ([]fs.DirEntry, error) {
	r.note(name, func(a *access) { a.readdir = true })
	return r.Dir.ReadDir(name)
}

func (r *recorder) Open(name string) (rootfs.File, error) {
	r.note(name, func(a *access) { a.open = true })
	return r.Dir.Open(name)
}

func (r *recorder) OpenDevice(name string) (rootfs.File, error) {
	r.note(name, func(a *access) { a.open = true })
	return r.Dir.OpenDevice(name)
}

// paths returns the recorded paths, parents before children.
func (r *recorder) paths() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.seen))
	for p := range r.seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}
