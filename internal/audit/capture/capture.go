// Package capture copies what `cryptshift verify` reads from a live system
// into a directory tree that verify can read later with --root, on another
// machine, as evidence or as a test fixture.
//
// Capture runs verify itself against the live root through a recorder and
// then copies exactly the paths verify looked at: the captured tree gives
// the same answers as the system by construction. Nothing secret is copied:
// key files, libvirt secret values, disk images and device contents become
// empty stubs (their size, mode and format go to the manifest); LUKS
// headers become parsed metadata (luks.Header); initramfs images become
// member lists; configuration files are copied only from an allow-list,
// with password-like values redacted.
package capture

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/cryptshift/cryptshift/internal/audit/manifest"
	"github.com/cryptshift/cryptshift/internal/audit/verify"
	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
	"github.com/cryptshift/cryptshift/internal/hostview/sysconf"
	"github.com/cryptshift/cryptshift/luks"
)

// Options say what to capture and where.
type Options struct {
	Root    string // the system to capture; default "/"
	Dest    string // a new or empty directory
	Tool    string // tool version, recorded in the manifest
	Comment string
	Now     func() time.Time
}

// Result summarises a capture.
type Result struct {
	Dest      string
	Files     int      // files, links and directories written
	Skipped   []string // what could not be captured, with why
	Mismatch  []string // results verify gives differently on the capture
	Manifest  *manifest.Manifest
	LiveCheck *verify.Report
}

// maxCopy bounds a copied configuration or pseudo file: mountinfo on a
// container host is the largest thing copied, well below this.
const maxCopy = 8 << 20

// Capture records what verify reads from o.Root and writes it under o.Dest.
func Capture(o Options) (res *Result, err error) {
	if o.Root == "" {
		o.Root = "/"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	created, err := checkDest(o.Dest)
	if err != nil {
		return nil, err
	}
	// A failed run leaves no directory of its own making behind.
	defer func() {
		if err != nil && created {
			_ = os.RemoveAll(o.Dest)
		}
	}()
	src := rootfs.Dir(o.Root)
	rec := newRecorder(src)
	isLive := src.Live()
	live, err := verify.Run(verify.Options{Root: o.Root, FS: rec, Version: o.Tool, Live: &isLive})
	if err != nil {
		return nil, fmt.Errorf("cannot capture %s: %w", o.Root, err)
	}
	m := &manifest.Manifest{
		Schema: manifest.Schema, Host: live.Header.Host, Kernel: live.Header.Kernel,
		Date: o.Now().UTC().Format("2006-01-02"), Tool: o.Tool, Comment: o.Comment,
		LUKS: map[string]*luks.Header{}, Files: map[string]manifest.FileInfo{},
		Signatures: map[string]string{}, Initramfs: map[string][]sysconf.InitramfsEntry{},
		Modes: map[string]uint32{},
	}
	// Capturing a captured tree (to move or prune it) keeps what its
	// manifest says about the original system.
	prev, isCapture, err := manifest.ReadManifest(src)
	if err != nil {
		return nil, err
	}
	c := &copier{src: src, dest: o.Dest, m: m, sparse: sparseDirs(src), inputs: live.Inputs}
	for _, p := range rec.paths() {
		if p == path.Dir(manifest.ManifestPath) || strings.HasPrefix(p, path.Dir(manifest.ManifestPath)+"/") {
			continue
		}
		c.materialize(p, rec.seen[p])
	}
	if isCapture {
		inherit(m, prev)
	} else {
		c.cryptHeaders()
	}
	if src.Live() {
		c.dmCiphers()
	}
	if err := rootfs.KeepEmptyDirs(o.Dest); err != nil {
		return nil, fmt.Errorf("cannot capture into %s: %w", o.Dest, err)
	}
	if c.err != nil {
		return nil, c.err
	}
	sort.Strings(m.Skipped)
	if err := writeManifest(o.Dest, m); err != nil {
		return nil, err
	}
	res = &Result{Dest: o.Dest, Files: c.n, Skipped: m.Skipped, Manifest: m, LiveCheck: live}
	// Self-check: the capture must give the same verdicts as the system.
	again, err := verify.Run(verify.Options{Root: o.Dest, Version: o.Tool})
	if err != nil {
		return nil, fmt.Errorf("cannot verify the capture in %s: %w", o.Dest, err)
	}
	res.Mismatch = Compare(live, again)
	return res, nil
}

// inherit copies a source capture's knowledge into a new manifest.
func inherit(m, prev *manifest.Manifest) {
	m.Host, m.Kernel, m.Date = prev.Host, prev.Kernel, prev.Date
	if m.Comment == "" {
		m.Comment = prev.Comment
	}
	for k, v := range prev.LUKS {
		m.LUKS[k] = v
	}
	for k, v := range prev.Files {
		m.Files[k] = v
	}
	for k, v := range prev.Signatures {
		m.Signatures[k] = v
	}
	for k, v := range prev.Initramfs {
		m.Initramfs[k] = v
	}
	for k, v := range prev.Modes {
		m.Modes[k] = v
	}
	m.Skipped = append(m.Skipped, prev.Skipped...)
	m.Absent = append(m.Absent, prev.Absent...)
	for k, v := range prev.DMCrypt {
		if m.DMCrypt == nil {
			m.DMCrypt = map[string]string{}
		}
		m.DMCrypt[k] = v
	}
}

// Compare lists the results (id, subject, status) that differ between two
// reports of the same system.
func Compare(a, b *verify.Report) []string {
	key := func(c verify.Result) string { return c.ID + " " + c.Subject }
	am, bm := map[string]verify.Status{}, map[string]verify.Status{}
	for _, c := range a.Checks {
		am[key(c)] = worse(am[key(c)], c.Status)
	}
	for _, c := range b.Checks {
		bm[key(c)] = worse(bm[key(c)], c.Status)
	}
	var out []string
	for k, s := range am {
		if t, ok := bm[k]; !ok {
			out = append(out, fmt.Sprintf("%s: %s live, missing in the capture", k, s))
		} else if s != t {
			out = append(out, fmt.Sprintf("%s: %s live, %s in the capture", k, s, t))
		}
	}
	for k, t := range bm {
		if _, ok := am[k]; !ok {
			out = append(out, fmt.Sprintf("%s: missing live, %s in the capture", k, t))
		}
	}
	sort.Strings(out)
	return out
}

func worse(a, b verify.Status) verify.Status {
	order := map[verify.Status]int{"": -1, verify.Pass: 0, verify.Skip: 1, verify.Warn: 2, verify.Fail: 3}
	if order[b] > order[a] {
		return b
	}
	return a
}

// checkDest makes sure dest is a new or empty directory, and says whether
// it made it.
func checkDest(dest string) (created bool, err error) {
	if dest == "" {
		return false, errors.New("cannot capture: no destination directory given")
	}
	ents, err := os.ReadDir(dest)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Only DIR itself is made: a missing parent is a mistyped path
		// more often than a wish for a new tree.
		if err := os.Mkdir(dest, 0o700); err != nil {
			return false, fmt.Errorf("cannot capture into %s: %w; create its parent directory first", dest, err)
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("cannot capture into %s: %w", dest, err)
	case len(ents) > 0:
		return false, fmt.Errorf("cannot capture into %s: the directory is not empty; give a new or empty directory", dest)
	}
	return false, nil
}

func writeManifest(dest string, m *manifest.Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("cannot write capture manifest: %w", err)
	}
	p := filepath.Join(dest, filepath.FromSlash(manifest.ManifestPath))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("cannot write capture manifest: %w", err)
	}
	if err := os.WriteFile(p, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("cannot write capture manifest: %w", err)
	}
	return nil
}

// privateDirs are listed by verify only to look for LUKS header backups;
// file names in them (and in their direct subdirectories) can be personal
// data, so capture keeps only subdirectories and the files verify opened.
var privateDirs = []string{"/root", "/home"}

func sparseDirs(src rootfs.FS) map[string]bool {
	out := map[string]bool{}
	for _, d := range privateDirs {
		out[d] = true
		ents, err := rootfs.ReadDir(src, d)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if e.IsDir() {
				out[path.Join(d, e.Name())] = true
			}
		}
	}
	return out
}

type copier struct {
	src    rootfs.Dir
	dest   string
	m      *manifest.Manifest
	sparse map[string]bool
	inputs map[string]string // configuration files verify read elsewhere than usual, by kind
	n      int
	err    error
}

func (c *copier) fail(err error) {
	if c.err == nil && err != nil {
		c.err = fmt.Errorf("cannot capture into %s: %w", c.dest, err)
	}
}

func (c *copier) skip(format string, a ...any) {
	c.m.Skipped = append(c.m.Skipped, fmt.Sprintf(format, a...))
}

// target returns where p goes in dest: its parent resolved inside the
// source root, so that nothing is ever created through a symlink.
func (c *copier) target(p string) (string, bool) {
	if p == "/" {
		return "/", true
	}
	parent, err := rootfs.Resolve(c.src, path.Dir(p))
	if err != nil {
		return "", false
	}
	return path.Join(parent, path.Base(p)), true
}

// mkdirs creates the directories of rel under dest, refusing to pass
// through anything that is not a directory.
func (c *copier) mkdirs(rel string) error {
	cur := c.dest
	for _, comp := range strings.Split(strings.Trim(rel, "/"), "/") {
		if comp == "" {
			continue
		}
		cur = filepath.Join(cur, comp)
		fi, err := os.Lstat(cur)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := os.Mkdir(cur, 0o755); err != nil {
				return err
			}
			c.n++
		case err != nil:
			return err
		case !fi.IsDir():
			return fmt.Errorf("%s exists and is not a directory", cur)
		}
	}
	return nil
}

func (c *copier) host(p string) string { return filepath.Join(c.dest, filepath.FromSlash(p)) }

// materialize writes one recorded path.
func (c *copier) materialize(recorded string, a *access) {
	p, ok := c.target(recorded)
	if !ok {
		return
	}
	fi, err := c.src.Lstat(p)
	if err != nil {
		// verify saw it missing; the capture keeps it missing and says so,
		// so that its absence is a fact in the tree, not a gap.
		if errors.Is(err, fs.ErrNotExist) && c.src.Live() && !c.covered(recorded) {
			c.m.Absent = append(c.m.Absent, recorded)
		}
		return
	}
	if err := c.mkdirs(path.Dir(p)); err != nil {
		c.fail(err)
		return
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		c.link(p)
	case fi.IsDir():
		if err := c.mkdirs(p); err != nil {
			c.fail(err)
			return
		}
		if a.readdir {
			c.listing(p)
		}
	case fi.Mode().IsRegular() && a.open:
		c.content(p, fi)
	default:
		if a.open && strings.HasPrefix(p, "/dev/") && fi.Mode()&fs.ModeDevice != 0 {
			c.signature(p)
		}
		c.stub(p, fi, nil)
	}
}

// covered reports whether p lies below a path already recorded absent.
func (c *copier) covered(p string) bool {
	for _, a := range c.m.Absent {
		if strings.HasPrefix(p, a+"/") {
			return true
		}
	}
	return false
}

func (c *copier) link(p string) {
	t, err := c.src.Readlink(p)
	if err != nil {
		c.skip("%s: %v", p, err)
		return
	}
	h := c.host(p)
	if _, err := os.Lstat(h); err == nil {
		return
	}
	if err := os.Symlink(t, h); err != nil {
		c.fail(err)
		return
	}
	c.n++
}

// listing recreates a directory's entries: subdirectories, links and
// stubs for files. In sparse directories only subdirectories are kept.
func (c *copier) listing(dir string) {
	ents, err := c.src.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		p := path.Join(dir, e.Name())
		if _, err := os.Lstat(c.host(p)); err == nil {
			continue
		}
		switch {
		case e.IsDir():
			if err := c.mkdirs(p); err != nil {
				c.fail(err)
			}
		case c.sparse[dir]:
			continue
		case e.Type()&fs.ModeSymlink != 0:
			c.link(p)
		default:
			fi, err := e.Info()
			if err != nil {
				continue
			}
			c.stub(p, fi, nil)
		}
	}
}

// stub writes an empty file (or a prefix of the original) that keeps the
// name; the mode goes to the manifest, since version control loses it.
func (c *copier) stub(p string, fi fs.FileInfo, prefix []byte) {
	h := c.host(p)
	if err := os.WriteFile(h, prefix, 0o600); err != nil {
		c.fail(err)
		return
	}
	c.n++
	if fi != nil && fi.Mode().IsRegular() && fi.Mode().Perm() != 0o644 {
		c.m.Modes[p] = uint32(fi.Mode().Perm())
	}
}

// copyable are the configuration files verify reads whose contents are
// copied (with redaction); every other opened file becomes a stub.
var copyable = regexp.MustCompile(`^(` + strings.Join([]string{
	`/proc/.*`, `/sys/.*`,
	`/etc/(fstab|crypttab|hostname|passwd|kdump\.conf|sysctl\.conf)`,
	`/etc/default/(grub|kdump-tools|libvirt-guests)`,
	`/etc/initramfs-tools/conf\.d/[^/]+`, `/etc/cryptsetup-initramfs/conf-hook`,
	`/(etc|run|usr/lib|lib|usr/local/lib)/sysctl\.d/[^/]+\.conf`,
	`/(etc|run|usr/lib|lib)/systemd/(coredump|journald)\.conf(\.d/[^/]+\.conf)?`,
	`/etc/postfix/main\.cf`, `/etc/dovecot/.*\.conf`,
	`/etc/libvirt/qemu\.conf`, `/(etc|run)/libvirt/qemu/[^/]+\.xml`, `/etc/libvirt/storage/[^/]+\.xml`,
	`/etc/libvirt/secrets/[^/]+\.xml`, `/var/lib/libvirt/qemu/snapshot/[^/]+/[^/]+\.xml`,
	`/etc/amavis/conf\.d/[^/]+`, `/etc/lvm/backup/[^/]+`,
}, "|") + `)$`)

var (
	// A password-like key with a value: the value is replaced.
	secretLine = regexp.MustCompile(`(?im)^(\s*[#;]?\s*[\w.\-$]*(?:pass(?:word|wd|phrase)?|secret|token)[\w.\-]*\s*[=:]\s*).+$`)
	// libvirt <graphics passwd='...'> and friends.
	secretAttr = regexp.MustCompile(`(passwd|password)=(['"])[^'"]*(['"])`)
	// amavis is Perl: keep only the assignments verify reads.
	amavisKeep = regexp.MustCompile(`^\s*\$(MYHOME|TEMPBASE|QUARANTINEDIR)\s*=`)
)

// Redact removes password-like values from a configuration file.
func Redact(p string, b []byte) []byte {
	if strings.HasPrefix(p, "/etc/amavis/") {
		var keep []string
		for _, l := range strings.Split(string(b), "\n") {
			if amavisKeep.MatchString(l) {
				keep = append(keep, l)
			}
		}
		return []byte(strings.Join(keep, "\n") + "\n")
	}
	if strings.HasPrefix(p, "/proc/") || strings.HasPrefix(p, "/sys/") || p == "/etc/passwd" {
		return b
	}
	b = secretAttr.ReplaceAll(b, []byte("$1=$2<redacted>$3"))
	return secretLine.ReplaceAll(b, []byte("${1}<redacted>"))
}

func (c *copier) content(p string, fi fs.FileInfo) {
	kind := c.inputs[p]
	switch {
	case (copyable.MatchString(p) || kind != "") && fi.Size() > maxCopy:
		c.skip("%s: %d bytes, larger than %d: not copied", p, fi.Size(), maxCopy)
		c.stub(p, fi, nil)
	case copyable.MatchString(p) || kind != "":
		f, err := c.src.Open(p)
		if err != nil {
			c.skip("%s: %v", p, err)
			c.stub(p, fi, nil)
			return
		}
		b, err := io.ReadAll(io.LimitReader(f, maxCopy))
		f.Close()
		if err != nil {
			c.skip("%s: %v", p, err)
		}
		if kind == "passwd-file" {
			b = RedactPasswdFile(b)
		}
		if err := os.WriteFile(c.host(p), Redact(p, b), 0o644); err != nil {
			c.fail(err)
			return
		}
		c.n++
	case strings.HasPrefix(p, "/boot/initrd.img-") || strings.HasPrefix(p, "/boot/initramfs-"):
		c.initramfs(p)
		c.stub(p, fi, nil)
	default:
		c.image(p, fi)
	}
}

// RedactPasswdFile blanks the password field (the second) of a Dovecot
// passwd-file ("user:password:uid:gid:gecos:home:shell:extra"): verify
// needs the homes, never the hashes.
func RedactPasswdFile(b []byte) []byte {
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		f := strings.Split(l, ":")
		if len(f) > 1 && !strings.HasPrefix(strings.TrimSpace(l), "#") {
			f[1] = "<redacted>"
			if len(f) > 7 {
				f = append(f[:7], secretField.ReplaceAllString(strings.Join(f[7:], ":"), "$1<redacted>"))
			}
			lines[i] = strings.Join(f, ":")
		}
	}
	return []byte(strings.Join(lines, "\n"))
}

// secretField matches pass=..., password=... and nopassword in extra fields.
var secretField = regexp.MustCompile(`((?:^|\s)(?:userdb_)?(?:pass|password|passwd)=)\S*`)

func (c *copier) initramfs(p string) {
	f, err := c.src.Open(p)
	if err != nil {
		c.skip("%s: %v", p, err)
		return
	}
	defer f.Close()
	l, err := sysconf.ListInitramfs(f)
	if err != nil {
		c.skip("%s: %v", p, err)
		return
	}
	c.m.Initramfs[p] = l
}

// image keeps what identifies a disk image or header backup: a qcow2
// header (no guest data lives there), the 8-byte LUKS magic plus parsed
// metadata, or nothing; the real size goes to the manifest.
func (c *copier) image(p string, fi fs.FileInfo) {
	f, err := c.src.Open(p)
	if err != nil {
		c.skip("%s: %v", p, err)
		c.stub(p, fi, nil)
		return
	}
	defer f.Close()
	head := make([]byte, 8)
	n, _ := f.ReadAt(head, 0)
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, sysconf.QCOW2Magic):
		q, err := sysconf.ParseQCOW2(f)
		if err != nil {
			c.skip("%s: %v", p, err)
			c.stub(p, fi, head)
			return
		}
		prefix := make([]byte, q.HeaderEnd)
		if _, err := f.ReadAt(prefix, 0); err != nil {
			c.skip("%s: %v", p, err)
		}
		c.stub(p, fi, prefix)
		c.m.Files[p] = manifest.FileInfo{Size: fi.Size(), Format: "qcow2"}
	case luks.IsLUKS(head):
		c.stub(p, fi, head)
		c.m.Files[p] = manifest.FileInfo{Size: fi.Size(), Format: "luks"}
		h, err := readHeader(f, p)
		if err != nil {
			c.skip("%s: %v", p, err)
			return
		}
		c.m.LUKS[p] = h
	default:
		c.stub(p, fi, nil)
		if fi.Size() >= 1<<20 {
			c.m.Files[p] = manifest.FileInfo{Size: fi.Size(), Format: "raw"}
		}
	}
}

// readHeader reads LUKS metadata from a file opened through the root.
func readHeader(f rootfs.File, name string) (*luks.Header, error) {
	o, ok := rootfs.OSFile(f)
	if !ok {
		return nil, fmt.Errorf("cannot read LUKS header of %s: not a file of this machine", name)
	}
	return luks.ReadHeaderFile(o, name)
}

// signature records what a block device starts with (blkid-style magic
// only), for devices verify probes.
func (c *copier) signature(p string) {
	f, err := rootfs.OpenDevice(c.src, p)
	if err != nil {
		c.skip("%s: %v", p, err)
		return
	}
	defer f.Close()
	c.m.Signatures[path.Base(p)] = sysconf.ProbeSignature(f)
}

// cryptHeaders stores the metadata of the LUKS header under every open
// LUKS crypt node: verify reads those headers from the device directly.
func (c *copier) cryptHeaders() {
	sys, err := blockstack.Scan(c.src)
	if err != nil {
		c.skip("block devices: %v", err)
		return
	}
	for _, d := range sys.CryptNodes() {
		low := d.Lower()
		if !strings.HasPrefix(d.CryptType(), "LUKS") || len(low) != 1 {
			continue
		}
		p := "/dev/" + low[0]
		f, err := rootfs.OpenDevice(c.src, p)
		if err != nil {
			c.skip("%s: %v", p, err)
			continue
		}
		h, err := readHeader(f, p)
		f.Close()
		if err != nil {
			c.skip("%s: %v", p, err)
			continue
		}
		c.m.LUKS[p] = h
	}
}

// dmCiphers records the cipher the kernel runs each crypt node with (the
// dm table's IMA form: no key), so a capture knows a cipher_null mapping.
func (c *copier) dmCiphers() {
	sys, err := blockstack.Scan(c.src)
	if err != nil {
		return
	}
	var names []string
	for _, d := range sys.CryptNodes() {
		names = append(names, d.DMName)
	}
	if len(names) == 0 {
		return
	}
	ciphers, err := blockstack.LiveCryptCiphers(names)
	if err != nil {
		c.skip("dm tables: %v", err)
		return
	}
	c.m.DMCrypt = ciphers
}

// KeepName is put into empty directories (see rootfs.KeepName).
const KeepName = rootfs.KeepName
