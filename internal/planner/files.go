package planner

import (
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/cryptshift/cryptshift/internal/model/layout"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/luks"
)

// KeyFileBytes is the size of generated key files: 4096 random bytes, far
// beyond any brute force and well under cryptsetup's 8 MiB key file limit.
const KeyFileBytes = 4096

func (p *planner) addMount(m mountSpec) { p.partMounts[m.device] = m }

func (p *planner) planKeyFile(st *volState) {
	e := st.v.Encryption
	st.keyFile = path.Join(p.l.Keys.KeyFileDir, e.Name+".key")
	if f := p.inv.File(st.keyFile); f != nil && f.Size > 0 {
		if f.Mode&0o077 != 0 {
			p.rep.Warnf(st.lp+".encryption", fmt.Sprintf("chmod 0400 %s", p.onRoot(st.keyFile)),
				"key file %s has mode %04o; other users can read it", st.keyFile, f.Mode&0o777)
		}
		return
	}
	c := p.content(st.dev)
	hasHeader := !st.created && c != nil && c.Type == "crypto_LUKS"
	if hasHeader {
		if ok, _ := luksMatches(c, e); ok {
			p.rep.Errorf(st.lp+".encryption", "restore the key file from backup, or open the volume with the recovery key and add a new key file with cryptsetup luksAddKey",
				"%s has a LUKS2 header but its key file %s is missing from %s", st.lvPath, st.keyFile, p.root)
			return
		}
	}
	p.add(plan.Step{
		Action: plan.ActKeyFile, Target: p.onRoot(st.keyFile),
		Description: fmt.Sprintf("generate a %d-byte random key file for %s (mode 0400, directory 0700, on the encrypted root)", KeyFileBytes, st.lvPath),
	}, &plan.Params{KeyFile: &plan.KeyFile{Path: p.onRoot(st.keyFile), Bytes: KeyFileBytes}}, &plan.Params{Remove: &plan.Remove{Path: p.onRoot(st.keyFile)}})
}

func (p *planner) planHeaderBackups() {
	dir := p.l.Keys.HeaderBackupDir
	if dir == "" {
		return
	}
	var steps []plan.Step
	for _, st := range p.vols {
		if st.v.Encryption.Type != layout.EncLUKS2 || st.luksUUID == "" {
			continue
		}
		f := path.Join(dir, st.v.Encryption.Name+".luksheader")
		if fi := p.inv.File(f); fi != nil && fi.Size > 0 && !st.format {
			continue
		}
		steps = append(steps, plan.NewStep(plan.Step{
			Action: plan.ActHeaderBackup, Target: p.onRoot(f),
			Description: fmt.Sprintf("back up the LUKS2 header of %s", st.lvPath),
		}, &plan.Params{HeaderBackup: &luks.HeaderBackup{Device: st.lvPath, File: p.onRoot(f)}}, &plan.Params{Remove: &plan.Remove{Path: p.onRoot(f)}}))
	}
	if len(steps) == 0 {
		return
	}
	p.add(plan.Step{
		Action: plan.ActMkdir, Target: p.onRoot(dir),
		Description: "create the header backup directory (mode 0700)",
	}, &plan.Params{Mkdir: &plan.Mkdir{Path: p.onRoot(dir), Mode: 0o700}}, nil)
	for _, s := range steps {
		p.add(s, s.Params, s.UndoParams)
	}
	p.note("LUKS header backups in %s are sensitive: with any passphrase or key file that was valid when they were made, they open the volume even after that key is removed; copy them offline and delete them from the host", dir)
}

// Block renders the marked block cryptshift writes into crypttab or fstab:
// the markers delimit what cryptshift owns, so a rerun replaces its block
// instead of adding lines twice, and rollback removes only that block.
func Block(layoutName, header string, lines []string) string {
	begin, end := plan.BlockMarkers(layoutName)
	var b strings.Builder
	b.WriteString(begin + "\n")
	b.WriteString("# " + header + "\n")
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	b.WriteString(end + "\n")
	return b.String()
}

func (p *planner) planFiles() {
	p.planTmp()
	p.noteUnlock()
	if len(p.crypttab) == 0 && len(p.fstab) == 0 {
		return
	}
	var ct, ft []string
	for _, e := range p.crypttab {
		ct = append(ct, e.Line)
	}
	for _, e := range p.fstab {
		ft = append(ft, e.Line)
	}
	crypttab := Block(p.l.Name, "<name> <device> <key file> <options>", ct)
	fstab := Block(p.l.Name, "<spec> <file> <type> <options> <dump> <pass>", ft)
	target := p.inv.Target
	if target != nil && target.Root != p.root {
		target = nil // an inventory of another root says nothing about this one
	}
	wroteCrypttab := len(ct) > 0 && (target == nil || !strings.Contains(target.Crypttab, crypttab))
	if wroteCrypttab {
		p.addWriteBlock(plan.ActWriteCrypttab, "/etc/crypttab", "crypttab", crypttab, len(ct))
	}
	if len(ft) > 0 && (target == nil || !strings.Contains(target.Fstab, fstab)) {
		p.addWriteBlock(plan.ActWriteFstab, "/etc/fstab", "fstab", fstab, len(ft))
	}
	if wroteCrypttab {
		p.add(plan.Step{
			Action: plan.ActInitramfs, Target: p.root,
			Description: "regenerate the initramfs so it unlocks the root volume at boot (skipped, with a notice, while the target root has no operating system yet)",
		}, &plan.Params{Initramfs: &plan.Initramfs{Root: p.root}}, nil)
	}
	if p.l.Hibernation {
		for _, st := range p.vols {
			if st.v.Purpose == layout.PurposeSwap && st.fsUUID != "" {
				p.note("hibernation: set RESUME=UUID=%s in %s and regenerate the initramfs", st.fsUUID, p.onRoot("/etc/initramfs-tools/conf.d/resume"))
				break
			}
		}
	}
	if p.keyFileKDF {
		p.note("keyslots opened by a key file use argon2id at its least cost (4 passes, at most 64 MiB): the key file's 4096 random bytes, not the KDF, are what an attacker would have to guess, and the cheap KDF saves up to 2 s and 1 GiB of memory per volume at every boot; passphrase and recovery keyslots keep the layout's KDF (a recovery key is written down by people, and a slow KDF multiplies the work left if part of it leaks)")
	}
	for _, st := range p.vols {
		if st.v.Encryption.Type != layout.EncNone && st.v.Encryption.Discard != nil && *st.v.Encryption.Discard {
			p.note("%s allows discards: TRIM keeps the SSD fast but reveals which blocks are unused (and so hints at the filesystem and how full it is); this was asked for in the layout", st.lvPath)
		}
	}
}

// addWriteBlock plans the edit of one of the new system's tab files.
func (p *planner) addWriteBlock(action, file, kind, block string, entries int) {
	f := p.onRoot(file)
	b := &plan.Block{File: f, Kind: kind, Layout: p.l.Name}
	p.add(plan.Step{
		Action: action, Target: f,
		Description: fmt.Sprintf("write %d %s entr(y/ies) into %s (a marked block; a backup of the old file is kept)", entries, kind, f),
		Input:       block,
	}, &plan.Params{WriteBlock: b}, &plan.Params{RestoreBlock: b})
}

func (p *planner) planTmp() {
	for _, t := range p.l.Tmp {
		if t.Type != layout.TmpTmpfs {
			continue
		}
		size := t.Size
		if !strings.HasSuffix(size, "%") {
			if s, err := layout.ParseSize(size); err == nil {
				size = strconv.FormatInt((s.Bytes+mib-1)/mib, 10) + "m"
			}
		}
		opts := []string{"size=" + size, "mode=1777", "nosuid", "nodev"}
		if t.Path == "/dev/shm" {
			opts = append(opts, "noexec")
		}
		opts = append(opts, t.Options...)
		p.fstab = append(p.fstab, fstabEntry("tmpfs", t.Path, "tmpfs", opts, 0))
	}
}

func crypttabEntry(name, device, keyFile, options string) plan.CrypttabEntry {
	return plan.CrypttabEntry{
		Name: name, Device: device, KeyFile: keyFile, Options: options,
		Line: plan.CrypttabLine(name, device, keyFile, options),
	}
}

func fstabEntry(spec, file, typ string, options []string, pass int) plan.FstabEntry {
	opts := strings.Join(options, ",")
	if opts == "" {
		opts = "defaults"
	}
	return plan.FstabEntry{
		Spec: spec, File: file, Type: typ, Options: opts, Pass: pass,
		Line: plan.FstabLine(spec, file, typ, opts, 0, pass),
	}
}

// noteUnlock says where keys.unlock takes effect: apply binds the root's
// Clevis keyslots (planBindings); the boot path of the moved system
// (dropbear and Clevis in its initramfs) is set up by cryptshift
// migrate-host (apply lays out empty disks, with no initramfs).
func (p *planner) noteUnlock() {
	u := p.l.Keys.Unlock
	if u == nil {
		return
	}
	ip := u.IP
	if ip == "" {
		ip = "dhcp"
	}
	if u.SSH != nil {
		p.note("unlock over SSH: cryptshift migrate-host puts dropbear into the new system's initramfs with %d authorized key(s), ip=%s and no password logins; unlock with ssh root@HOST cryptroot-unlock", len(u.SSH.AuthorizedKeys), ip)
	}
	for _, t := range u.Tang {
		p.note("unlock by Tang: apply binds the root to %s (thumbprint %s) with clevis luks bind, after checking the server answers with that key (cryptshift migrate-host binds it if apply has not); ip=%s in the initramfs", t.URL, t.Thumbprint, ip)
	}
	if t := u.TPM2; t != nil {
		pcrs := t.PCRs
		if pcrs == "" {
			pcrs = "7"
		}
		p.note("unlock by TPM2: apply binds the root to the TPM (clevis tpm2 pin, PCRs %s); without a PIN it unlocks for anyone who boots the machine unchanged, and more PCRs mean a re-bind after firmware or kernel updates", pcrs)
	}
	if len(u.Tang) > 0 || u.TPM2 != nil {
		p.note("the passphrase and recovery keyslots stay: the passphrase unlocks on the console or over SSH whenever Tang or the TPM cannot")
	}
}
