package verify

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/audit/manifest"
	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
)

// checkInputs names, for every check id, the files it rests on in the
// reference fixture; "essential" inputs make verify refuse the tree as a
// whole (no report), the others must turn the check into SKIP.
var checkInputs = map[string]struct {
	inputs    []string
	essential bool
}{
	"swap.device":             {[]string{"/proc/swaps"}, true},
	"swap.zram-writeback":     {[]string{"/sys/class/block"}, true},
	"swap.fstab":              {[]string{"/etc/fstab"}, false},
	"swap.crypttab":           {[]string{"/etc/crypttab"}, false},
	"hibernate.resume":        {[]string{"/sys/power/resume"}, false},
	"tmp.tmp":                 {[]string{"/proc/self/mountinfo"}, true},
	"tmp.var-tmp":             {[]string{"/proc/self/mountinfo"}, true},
	"tmp.dev-shm":             {[]string{"/proc/self/mountinfo"}, true},
	"logs.var-log":            {[]string{"/proc/self/mountinfo"}, true},
	"logs.journal":            {[]string{"/proc/self/mountinfo"}, true},
	"storage.mount":           {[]string{"/proc/self/mountinfo"}, true},
	"storage.leftover":        {[]string{"/sys/class/block"}, true},
	"coredump.pattern":        {[]string{"/proc/sys/kernel/core_pattern"}, false},
	"coredump.systemd":        {[]string{"/proc/sys/kernel/core_pattern", "/usr/lib/sysctl.d"}, false},
	"coredump.crash-dir":      {[]string{"/var/crash"}, false},
	"kdump.target":            {[]string{"/sys/kernel/kexec_crash_loaded", "/etc/kdump.conf", "/etc/default/kdump-tools"}, false},
	"libvirt.installed":       {[]string{"/etc/libvirt"}, false},
	"libvirt.leftover":        {[]string{"/var/lib/libvirt/images"}, false},
	"libvirt.disk.backing":    {[]string{"/var/lib/libvirt/images", "/srv"}, false}, // where the fixtures keep images
	"libvirt.dump":            {[]string{"/etc/libvirt/qemu.conf"}, false},
	"libvirt.dump-guest-core": {[]string{"/etc/libvirt/qemu.conf"}, false},
	"libvirt.secrets":         {[]string{"/etc/libvirt/secrets"}, false},
	"lvm.snapshot":            {[]string{"/sys/class/block"}, true},
	"lvm.leftover":            {[]string{"/sys/class/block"}, true},
	"lvm.metadata":            {[]string{"/etc/lvm"}, false},
	"mail.postfix.queue":      {[]string{"/etc/postfix/main.cf"}, false},
	"mail.postfix.spool":      {[]string{"/etc/postfix/main.cf"}, false},
	"mail.dovecot.location":   {[]string{"/etc/dovecot"}, false},
	"mail.dovecot.index":      {[]string{"/etc/dovecot"}, false},
	"mail.filters":            {[]string{"/etc/amavis"}, false},
	"keys.crypttab":           {[]string{"/etc/crypttab"}, false},
	"keys.initramfs":          {[]string{"/boot"}, false},
	"keys.header-backup":      {[]string{"/boot", "/root", "/etc", "/var/backups", "/home"}, false},
	"luks.header":             {[]string{"/cryptshift-capture/manifest.json:luks"}, false},
	"keys.unlock":             {[]string{"/cryptshift-capture/manifest.json:luks"}, false},
}

// notInputBound are check ids without an entry in checkInputs, and why:
// their verdicts rest on what a domain or header names, not on one file
// whose removal the test could stage (a guest's image missing from the
// tree is a WARN "does not exist", which is the right verdict).
var notInputBound = []string{"libvirt.disk.storage", "libvirt.managed-save", "libvirt.snapshot.memory",
	"libvirt.memory-backing", "libvirt.pool", "mail.amavis"}

// hidingFS is a fixture's root with some paths removed, without copying
// the tree: each removal is one more verify run, over every fixture.
type hidingFS struct {
	rootfs.FS
	hide     []string
	manifest []byte // replaces the capture manifest when set
}

func (h hidingFS) hidden(name string) bool {
	name = rootfs.Clean(name)
	for _, p := range h.hide {
		if name == p || strings.HasPrefix(name, p+"/") {
			return true
		}
	}
	return false
}

func (h hidingFS) Lstat(name string) (fs.FileInfo, error) {
	if h.hidden(name) {
		return nil, &fs.PathError{Op: "lstat", Path: name, Err: fs.ErrNotExist}
	}
	return h.FS.Lstat(name)
}

func (h hidingFS) Readlink(name string) (string, error) {
	if h.hidden(name) {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrNotExist}
	}
	return h.FS.Readlink(name)
}

func (h hidingFS) ReadDir(name string) ([]fs.DirEntry, error) {
	if h.hidden(name) {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrNotExist}
	}
	ents, err := h.FS.ReadDir(name)
	out := ents[:0]
	for _, e := range ents {
		if !h.hidden(path.Join(rootfs.Clean(name), e.Name())) {
			out = append(out, e)
		}
	}
	return out, err
}

func (h hidingFS) Open(name string) (rootfs.File, error) {
	if h.hidden(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	if h.manifest != nil && rootfs.Clean(name) == manifest.ManifestPath {
		return nopCloser{bytes.NewReader(h.manifest)}, nil
	}
	return h.FS.Open(name)
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

// withoutLUKS is a capture manifest without its LUKS metadata.
func withoutLUKS(t *testing.T, root string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(manifest.ManifestPath)))
	if err != nil {
		return nil // a bare tree: its headers come from the device stubs
	}
	var m manifest.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m.LUKS = nil
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestNoPassWithoutInputs: for every fixture in testdata/verify and every
// check id its report holds, removing the check's inputs yields SKIP for
// it, never PASS; removing an essential input refuses the tree. The
// overall verdict is not asserted here: a SKIP outside the data-at-rest
// areas (content filters, libvirt absent) leaves PASS possible by design.
// Ids sharing their inputs share one run.
func TestNoPassWithoutInputs(t *testing.T) {
	ents, err := os.ReadDir(fixtureDir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ent := range ents {
		root := filepath.Join(fixtureDir, ent.Name(), "root")
		if _, err := os.Stat(root); err != nil {
			continue
		}
		n++
		t.Run(ent.Name(), func(t *testing.T) {
			t.Parallel()
			ref, err := Run(Options{Root: root, Version: "test"})
			if err != nil {
				t.Fatal(err)
			}
			groups := map[string][]string{}
			var keys []string
			seen := map[string]bool{}
			for _, c := range ref.Checks {
				if seen[c.ID] {
					continue
				}
				seen[c.ID] = true
				in, ok := checkInputs[c.ID]
				if !ok {
					if !contains(notInputBound, c.ID) && Area(c.ID) != "luks" {
						t.Errorf("check %s has no entry in checkInputs: say which inputs it rests on", c.ID)
					}
					continue
				}
				k := strings.Join(in.inputs, " ")
				if groups[k] == nil {
					keys = append(keys, k)
				}
				groups[k] = append(groups[k], c.ID)
			}
			sort.Strings(keys)
			for _, k := range keys {
				ids := groups[k]
				in := checkInputs[ids[0]]
				h := hidingFS{FS: rootfs.Dir(root)}
				for _, p := range in.inputs {
					if p == "/cryptshift-capture/manifest.json:luks" {
						h.manifest = withoutLUKS(t, root)
						continue
					}
					h.hide = append(h.hide, p)
				}
				live := false
				r, err := Run(Options{Root: root, FS: h, Live: &live, Version: "test"})
				if in.essential {
					if !errors.Is(err, ErrNotHostTree) {
						t.Errorf("without %v: got %v, want the tree refused", in.inputs, err)
					}
					continue
				}
				if err != nil {
					t.Errorf("without %v: %v", in.inputs, err)
					continue
				}
				for _, id := range ids {
					found := false
					for _, c := range r.Checks {
						if c.ID != id {
							continue
						}
						found = true
						// A WARN that names the missing file as gone (a guest's
						// backing layer) is a verdict on evidence too.
						if c.Status != Skip && (c.Status == Pass || !strings.Contains(strings.Join(c.Evidence, " "), "does not exist")) {
							t.Errorf("without %v: %s %s is %s %q, want SKIP", in.inputs, c.ID, c.Subject, c.Status, c.Evidence)
						}
					}
					if !found {
						t.Errorf("without %v: no result for %s at all; want SKIP saying why", in.inputs, id)
					}
				}
			}
		})
	}
	if n < 30 {
		t.Fatalf("found %d fixtures in %s, want every fixture", n, fixtureDir)
	}
}

// TestEmptyAndNonTreeDirectoriesAreRefused: no report, so no PASS.
func TestEmptyAndNonTreeDirectoriesAreRefused(t *testing.T) {
	for _, dir := range []string{t.TempDir(), filepath.Join(fixtureDir, "mailhost-luks-on-lvm"), "../../../docs"} {
		if r, err := Run(Options{Root: dir, Version: "test"}); !errors.Is(err, ErrNotHostTree) || r != nil {
			t.Errorf("%s: got report %v, error %v; want ErrNotHostTree and no report", dir, r != nil, err)
		}
	}
}
