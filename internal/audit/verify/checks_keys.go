package verify

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
	"github.com/cryptshift/cryptshift/internal/hostview/sysconf"
	"github.com/cryptshift/cryptshift/luks"
)

// keys.crypttab: a key file is as strong as the storage it sits on; on
// plaintext storage it unlocks its volume for anyone holding the disk.
func checkCrypttabKeys(e *env) {
	const id = "keys.crypttab"
	if e.crypttabErr != nil {
		e.crypttabSkip(id)
		return
	}
	n := 0
	for _, c := range e.crypttab {
		if c.KeyFile == "" || c.RandomKey() {
			continue
		}
		n++
		src := e.line("/etc/crypttab", c.Line) + fmt.Sprintf(": %s %s %s", c.Name, c.Device, c.KeyFile)
		if c.KeyDevice != "" {
			e.add(id, Warn, c.KeyFile, src, e.t("ev.keys.keydevice", c.KeyDevice))
			continue
		}
		loc := e.locate(c.KeyFile)
		st, ev := e.statusOf(loc)
		ev = append([]string{src}, ev...)
		if perm, err := e.mode(c.KeyFile); err != nil {
			if st == Pass {
				st = Warn
			}
			ev = append(ev, e.t("ev.absent", c.KeyFile))
		} else if perm&0o077 != 0 {
			// cryptsetup warns about key files readable by group or others.
			if st == Pass {
				st = Warn
			}
			ev = append(ev, e.t("ev.keys.mode", fmt.Sprintf("%04o", perm)))
		}
		e.add(id, st, c.KeyFile, ev...)
	}
	if n == 0 {
		e.na(id, "/etc/crypttab", e.t("ev.keys.nokeyfiles"))
	}
}

// keys.initramfs: cryptsetup-initramfs copies key files matching
// KEYFILE_PATTERN into the initramfs (cryptroot/keyfiles/); on a
// plaintext /boot that hands the key to anyone who reads the disk.
func checkInitramfsKeys(e *env) {
	const id = "keys.initramfs"
	images := e.initramfsImages()
	if len(images) == 0 {
		if _, err := rootfs.ReadDir(e.fs, "/boot"); err == nil || e.absent("/boot") {
			e.na(id, "/boot", e.t("ev.keys.noinitramfs"))
		} else {
			e.skip(id, "/boot", e.unreadable("/boot", err))
		}
		return
	}
	keyNames := map[string]bool{}
	for _, c := range e.crypttab {
		if c.KeyFile != "" && !c.RandomKey() {
			keyNames[strings.TrimPrefix(c.KeyFile, "/")] = true
		}
	}
	for _, img := range images {
		members, err := e.initramfsMembers(img)
		if errors.Is(err, sysconf.ErrInitramfsBomb) {
			e.refused[rootfs.Clean(img)] = sysconf.ErrInitramfsBomb.Error()
		}
		if err != nil {
			e.skip(id, img, err.Error())
			continue
		}
		var keys []string
		for _, m := range members {
			if sysconf.IsKeyFileMember(m.Name) || keyNames[m.Name] {
				keys = append(keys, m.Name)
			}
		}
		if len(keys) == 0 {
			e.add(id, Pass, img, e.tn("ev.keys.initramfs.none", len(members)))
			continue
		}
		loc := e.locate(img)
		st, ev := e.statusOf(loc)
		ev = append([]string{e.t("ev.keys.initramfs.found", strings.Join(keys, ", "))}, ev...)
		e.add(id, st, img, ev...)
	}
}

// initramfsImages lists Debian (initrd.img-*) and dracut (initramfs-*.img)
// images in /boot.
func (e *env) initramfsImages() []string {
	var out []string
	ents, err := rootfs.ReadDir(e.fs, "/boot")
	if err != nil {
		return nil
	}
	for _, ent := range ents {
		n := ent.Name()
		if ent.Type()&fs.ModeSymlink != 0 || ent.IsDir() {
			continue
		}
		if strings.HasPrefix(n, "initrd.img-") || strings.HasPrefix(n, "initramfs-") && strings.HasSuffix(n, ".img") {
			out = append(out, path.Join("/boot", n))
		}
	}
	sort.Strings(out)
	return out
}

func (e *env) initramfsMembers(img string) ([]sysconf.InitramfsEntry, error) {
	if e.manifest != nil {
		if l, ok := e.manifest.Initramfs[img]; ok {
			return l, nil
		}
		return nil, fmt.Errorf("%s", e.t("ev.keys.notcaptured", img))
	}
	r, err := rootfs.Resolve(e.fs, img)
	if err != nil {
		return nil, err
	}
	f, err := e.fs.Open(r)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return sysconf.ListInitramfs(f)
}

// HeaderBackupDirs are searched (and their direct subdirectories) for
// LUKS header backups: where `cryptsetup luksHeaderBackup` files usually
// end up. `capture` copies only what this search finds from them.
var HeaderBackupDirs = []string{"/boot", "/root", "/etc", "/etc/luks", "/etc/cryptsetup-keys.d", "/var/backups", "/home"}

// Header backup sizes: `cryptsetup luksHeaderBackup` writes everything up
// to the data offset: at least the two 16 KiB LUKS2 metadata copies plus the
// keyslot area (LUKS1: about 1 MiB), usually 16 MiB. Smaller files are not
// backups; much bigger ones are images.
const (
	minHeaderBackupSize = 64 << 10
	maxHeaderBackupSize = 64 << 20
)

// keys.header-backup: a header backup keeps every keyslot as it was: a
// passphrase revoked later still opens the volume with the backup.
func checkHeaderBackups(e *env) {
	const id = "keys.header-backup"
	found := map[string]string{} // path -> source
	for _, c := range e.crypttab {
		if h, ok := c.Option("header"); ok {
			found[h] = e.line("/etc/crypttab", c.Line) + fmt.Sprintf(": header=%s", h)
		}
	}
	files, listed := e.findLUKSFiles()
	for _, p := range files {
		if _, ok := found[p]; !ok {
			found[p] = e.t("ev.keys.hdrmagic")
		}
	}
	if len(found) == 0 && listed == 0 {
		e.skip(id, strings.Join(HeaderBackupDirs, " "), e.t("ev.notcaptured", strings.Join(HeaderBackupDirs, ", ")))
		return
	}
	if len(found) == 0 {
		e.add(id, Pass, strings.Join(HeaderBackupDirs, " "), e.t("ev.keys.nohdr", strings.Join(HeaderBackupDirs, " ")))
		return
	}
	paths := make([]string, 0, len(found))
	for p := range found {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		loc := e.locate(p)
		st, ev := e.statusOf(loc)
		if loc.Class == blockstack.Plaintext {
			st = Warn // the header alone still needs a passphrase; it is not plaintext data
		}
		e.add(id, st, p, append([]string{found[p]}, ev...)...)
	}
}

// findLUKSFiles returns small regular files starting with the LUKS magic
// in HeaderBackupDirs and their direct subdirectories, and how many of
// those directories could be listed (or are known not to exist).
func (e *env) findLUKSFiles() ([]string, int) {
	var out []string
	listed := 0
	seen := map[string]bool{}
	var scan func(dir string, depth int)
	scan = func(dir string, depth int) {
		ents, err := rootfs.ReadDir(e.fs, dir)
		if err != nil {
			if depth == 0 && e.absent(dir) {
				listed++
			}
			return
		}
		if depth == 0 {
			listed++
		}
		for _, ent := range ents {
			p := path.Join(dir, ent.Name())
			if ent.IsDir() {
				if depth < 1 {
					scan(p, depth+1)
				}
				continue
			}
			if !ent.Type().IsRegular() || seen[p] {
				continue
			}
			seen[p] = true
			if e.manifest != nil && e.manifest.LUKS[p] != nil {
				out = append(out, p)
				continue
			}
			fi, err := ent.Info()
			if err != nil || fi.Size() < minHeaderBackupSize || fi.Size() > maxHeaderBackupSize {
				continue
			}
			f, err := e.fs.Open(p)
			if err != nil {
				continue
			}
			head := make([]byte, 6)
			n, _ := f.ReadAt(head, 0)
			f.Close()
			if luks.IsLUKS(head[:n]) {
				out = append(out, p)
			}
		}
	}
	for _, d := range HeaderBackupDirs {
		scan(d, 0)
	}
	return out, listed
}
