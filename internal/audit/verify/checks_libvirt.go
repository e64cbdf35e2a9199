package verify

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"libvirt.org/go/libvirtxml"

	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
	"github.com/cryptshift/cryptshift/internal/hostview/sysconf"
)

// libvirt's state directories (Debian's libvirt-daemon 9.0 layout).
const (
	libvirtSaveDir     = "/var/lib/libvirt/qemu/save"
	libvirtSnapshotDir = "/var/lib/libvirt/qemu/snapshot"
	libvirtDumpDefault = "/var/lib/libvirt/qemu/dump"
	libvirtRAMDefault  = "/var/lib/libvirt/qemu/ram"
	libvirtSecrets     = "/etc/libvirt/secrets"
)

func checkLibvirt(e *env) {
	if !e.exists("/etc/libvirt") {
		e.naIfAbsent("libvirt.installed", "libvirt", "/etc/libvirt")
		return
	}
	doms, problems := e.readDomains()
	// Without qemu.conf libvirt uses its built-in defaults, but only a
	// qemu.conf known to be absent means that: one missing from a tree
	// may set auto_dump_path or dump_guest_core, and its checks say SKIP.
	qconf, qconfMissing := map[string]string{}, ""
	if s, ok := e.read("/etc/libvirt/qemu.conf"); ok {
		qconf = sysconf.ParseLibvirtConf(s)
	} else if !e.absent("/etc/libvirt/qemu.conf") {
		qconfMissing = e.t("ev.notcaptured", "/etc/libvirt/qemu.conf")
	}
	used := map[string]bool{}
	e.checkGuestDisks(doms, problems, used)
	e.checkManagedSave()
	snapUsed := e.checkSnapshotMemory()
	for p := range snapUsed {
		used[p] = true
	}
	if qconfMissing != "" {
		e.skip("libvirt.dump", "qemu", qconfMissing)
		e.skip("libvirt.dump-guest-core", "qemu", qconfMissing)
	} else {
		e.checkAutoDump(qconf)
		e.checkDumpGuestCore(qconf, doms)
	}
	e.checkMemoryBacking(qconf, qconfMissing, doms)
	e.checkSecrets()
	e.checkPools()
	e.checkLeftovers(used)
}

// libvirt.disk.storage and libvirt.disk.backing.
func (e *env) checkGuestDisks(doms []domainInfo, problems []string, used map[string]bool) {
	for _, p := range problems {
		e.add("libvirt.disk.storage", Warn, "/etc/libvirt/qemu", p)
	}
	nDisks, nChains, nUnread := 0, 0, 0
	for _, d := range doms {
		for _, g := range d.Disks {
			nDisks++
			subj := d.Name + "/" + g.Target
			st, ev := e.layerStatus(g.Source)
			used[e.resolved(g.Source.Path)] = true
			e.add("libvirt.disk.storage", st, subj, append([]string{d.File}, ev...)...)
			if len(g.Chain) == 0 && g.Source.Kind == "file" {
				// No chain because the header was not read is no
				// evidence that there is none.
				if img := e.probeImage(g.Source.Path); !img.exists || img.err != nil {
					why := img.err
					if why == nil {
						why = errors.New(e.t("ev.absent", g.Source.Path))
					}
					nUnread++
					e.skip("libvirt.disk.backing", subj, e.t("ev.libvirt.noheader", g.Source.Path, why))
				}
			}
			for i, l := range g.Chain {
				nChains++
				if l.Kind == "problem" {
					e.add("libvirt.disk.backing", Warn, subj, l.Note)
					continue
				}
				used[e.resolved(l.Path)] = true
				st, ev := e.layerStatus(l)
				what := subj + ": " + e.t("subj.backing-layer", i+1)
				if l.Note == "data-file" {
					what = subj + ": data-file"
				}
				e.add("libvirt.disk.backing", st, what, ev...)
			}
		}
	}
	if nDisks == 0 && len(problems) == 0 {
		e.na("libvirt.disk.storage", "libvirt", e.t("ev.libvirt.nodomains"))
	}
	if nChains == 0 && nUnread == 0 {
		e.na("libvirt.disk.backing", "libvirt", e.t("ev.libvirt.nochains"))
	}
}

// layerStatus judges one image or device: qemu-level encryption (LUKS
// image, qcow2 with encrypt.format=luks, <encryption>) protects it on any
// storage; otherwise the storage under it decides.
func (e *env) layerStatus(l layer) (Status, []string) {
	head := e.t("ev.layer."+l.Kind, l.Path)
	if l.Format != "" {
		head += " (" + l.Format + ")"
	}
	switch l.Kind {
	case "network":
		return Warn, []string{head, e.t("ev.libvirt.network")}
	case "volume", "other":
		return Warn, []string{head, e.t("ev.libvirt.unresolved")}
	case "block":
		loc := e.locateSpec(l.Path)
		loc.Path = l.Path
		st, ev := e.statusOf(loc)
		return st, append([]string{head}, ev...)
	}
	img := e.probeImage(l.Path)
	if !img.exists {
		return Warn, []string{head, e.t("ev.absent", l.Path)}
	}
	native := l.Encrypted
	switch {
	case img.format == "luks":
		native = e.t("ev.libvirt.luksimage")
	case img.qcow != nil && img.qcow.CryptMethod == 2:
		native = e.t("ev.libvirt.qcowluks")
	case img.qcow != nil && img.qcow.CryptMethod == 1:
		// qcow2's legacy AES-CBC encryption is deprecated and refused by
		// qemu since 5.0 for new images (docs/about/removed-features.rst).
		return Warn, []string{head, e.t("ev.libvirt.qcowaes")}
	}
	loc := e.locate(l.Path)
	st, ev := e.statusOf(loc)
	if native != "" {
		return Pass, append([]string{head, native}, ev...)
	}
	return st, append([]string{head}, ev...)
}

// libvirt.managed-save: `virsh managedsave` and libvirt-guests at host
// shutdown (ON_SHUTDOWN=suspend, Debian's default) write the guest's whole
// RAM to /var/lib/libvirt/qemu/save.
func (e *env) checkManagedSave() {
	const id = "libvirt.managed-save"
	ev := []string{}
	onShutdown := "suspend"
	src := "/etc/default/libvirt-guests: ON_SHUTDOWN " + e.t("ev.default") + " suspend"
	if s, ok := e.read("/etc/default/libvirt-guests"); ok {
		if v := sysconf.ParseShellVars(s)["ON_SHUTDOWN"]; v != "" {
			onShutdown, src = v, "/etc/default/libvirt-guests: ON_SHUTDOWN="+v
		}
	}
	ev = append(ev, src)
	files := e.listFiles(libvirtSaveDir, ".save")
	for _, f := range files {
		ev = append(ev, e.t("ev.libvirt.savefile", f))
	}
	loc := e.locate(libvirtSaveDir)
	st, lev := e.statusOf(loc)
	if st == Fail && len(files) == 0 && onShutdown != "suspend" {
		st = Warn // nothing saved now, and nothing saves automatically
	}
	e.add(id, st, libvirtSaveDir, append(ev, lev...)...)
}

func (e *env) listFiles(dir, suffix string) []string {
	ents, err := rootfs.ReadDir(e.fs, dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, ent := range ents {
		if !ent.IsDir() && strings.HasSuffix(ent.Name(), suffix) {
			out = append(out, path.Join(dir, ent.Name()))
		}
	}
	return out
}

// libvirt.snapshot.memory: external memory snapshots are files holding the
// guest's RAM (<memory snapshot='external' file=.../>).
func (e *env) checkSnapshotMemory() map[string]bool {
	const id = "libvirt.snapshot.memory"
	used := map[string]bool{}
	doms, err := rootfs.ReadDir(e.fs, libvirtSnapshotDir)
	n := 0
	if err == nil {
		for _, d := range doms {
			for _, f := range e.listFiles(path.Join(libvirtSnapshotDir, d.Name()), ".xml") {
				b, err := rootfs.ReadFile(e.fs, f)
				if err != nil {
					continue
				}
				var s libvirtxml.DomainSnapshot
				if err := s.Unmarshal(string(b)); err != nil {
					e.add(id, Warn, f, e.t("ev.unreadable", f, err))
					continue
				}
				if s.Memory == nil || s.Memory.Snapshot != "external" || s.Memory.File == "" {
					continue
				}
				n++
				used[e.resolved(s.Memory.File)] = true
				loc := e.locate(s.Memory.File)
				st, ev := e.statusOf(loc)
				e.add(id, st, d.Name()+"/"+s.Name, append([]string{f}, ev...)...)
			}
		}
	}
	if n == 0 {
		e.na(id, libvirtSnapshotDir, e.t("ev.libvirt.nosnapshots"))
	}
	return used
}

// libvirt.dump: qemu.conf auto_dump_path receives guest memory dumps on
// watchdog or on_crash=coredump-destroy.
func (e *env) checkAutoDump(q map[string]string) {
	p, src := libvirtDumpDefault, "/etc/libvirt/qemu.conf: auto_dump_path "+e.t("ev.default")
	if v := q["auto_dump_path"]; v != "" {
		p, src = v, "/etc/libvirt/qemu.conf: auto_dump_path = "+v
	}
	e.locationCheck("libvirt.dump", p, p, src)
}

// libvirt.dump-guest-core: with dump_guest_core = 1 (or <memory
// dumpCore='on'>) a crashing qemu's core file contains all guest RAM.
func (e *env) checkDumpGuestCore(q map[string]string, doms []domainInfo) {
	const id = "libvirt.dump-guest-core"
	on := q["dump_guest_core"] == "1"
	var subjects []string
	for _, d := range doms {
		if d.DumpCore == "on" || on && d.DumpCore != "off" {
			subjects = append(subjects, d.Name)
		}
	}
	if len(subjects) == 0 {
		e.add(id, Pass, "qemu", "/etc/libvirt/qemu.conf: dump_guest_core = "+e.orZero(q["dump_guest_core"]))
		return
	}
	live, hl, conf, hc := e.corePattern()
	pattern := "core"
	if hl {
		pattern = live
	} else if hc {
		pattern = conf.Value
	}
	st, ev := e.coreDestination(pattern)
	if path.Base(coreHandler(pattern)) == "systemd-coredump" {
		st, ev = e.systemdCoredumpStatus()
	}
	for _, s := range subjects {
		e.add(id, st, s, append([]string{"dumpCore on", "kernel.core_pattern = " + pattern}, ev...)...)
	}
}

func (e *env) orZero(s string) string {
	if s == "" {
		return "0 " + e.t("ev.default")
	}
	return s
}

// systemdCoredumpStatus judges where systemd-coredump would store a dump.
func (e *env) systemdCoredumpStatus() (Status, []string) {
	conf, _ := sysconf.ReadSystemdConf(e.fs, "systemd/coredump.conf")
	storage := "external"
	if s, ok := conf["Coredump.Storage"]; ok {
		storage = strings.ToLower(s.Value)
	}
	switch storage {
	case "none":
		return Pass, []string{"systemd-coredump Storage=none"}
	case "journal":
		p := "/run/log/journal"
		if e.exists("/var/log/journal") {
			p = "/var/log/journal"
		}
		return e.statusOf(e.locate(p))
	}
	return e.statusOf(e.locate("/var/lib/systemd/coredump"))
}

// libvirt.memory-backing: <memoryBacking><source type='file'/> keeps guest
// RAM in files under qemu.conf memory_backing_dir.
func (e *env) checkMemoryBacking(q map[string]string, qMissing string, doms []domainInfo) {
	const id = "libvirt.memory-backing"
	dir := libvirtRAMDefault
	if v := q["memory_backing_dir"]; v != "" {
		dir = v
	}
	n := 0
	for _, d := range doms {
		if !d.FileRAM {
			continue
		}
		n++
		if qMissing != "" {
			e.skip(id, d.Name, "memoryBacking source type='file'", qMissing)
			continue
		}
		e.locationCheck(id, d.Name, dir, "memoryBacking source type='file', memory_backing_dir = "+dir)
	}
	if n == 0 {
		e.na(id, "libvirt", e.t("ev.libvirt.nofileram"))
	}
}

// libvirt.secrets: persistent secrets keep their values base64-encoded in
// /etc/libvirt/secrets/UUID.base64 (secret_driver); those values unlock
// qemu-encrypted disks.
func (e *env) checkSecrets() {
	const id = "libvirt.secrets"
	if !e.exists(libvirtSecrets) {
		e.naIfAbsent(id, libvirtSecrets, libvirtSecrets)
		return
	}
	values := e.listFiles(libvirtSecrets, ".base64")
	loc := e.locate(libvirtSecrets)
	st, ev := e.statusOf(loc)
	ev = append([]string{e.tn("ev.libvirt.secretvalues", len(values))}, ev...)
	if st == Fail && len(values) == 0 {
		st = Warn
	}
	e.add(id, st, libvirtSecrets, ev...)
}

// libvirt.pool: new guest images are created in pools.
func (e *env) checkPools() {
	const id = "libvirt.pool"
	for _, p := range e.pools() {
		subj := p.Name + " " + p.Path
		src := p.File
		if src == "" {
			src = e.t("ev.libvirt.defaultpool")
		}
		if p.VG != "" {
			st, ev := e.vgStatus(p.VG)
			e.add(id, st, subj, append([]string{src}, ev...)...)
			continue
		}
		if p.Type == "netfs" || p.Type == "rbd" || p.Type == "iscsi" || p.Type == "gluster" {
			e.add(id, Warn, subj, src, e.t("ev.libvirt.network"))
			continue
		}
		if p.Path == "" {
			continue
		}
		e.locationCheck(id, subj, p.Path, src)
	}
}

// vgStatus judges a volume group by its active LVs (sysfs shows only
// active ones; each LV's slaves are the PVs it uses).
func (e *env) vgStatus(vg string) (Status, []string) {
	if e.sys == nil {
		return Skip, []string{e.t("ev.nosysfs")}
	}
	prefix := strings.ReplaceAll(vg, "-", "--") + "-"
	st := Skip
	var ev []string
	for _, d := range e.sys.Devices {
		if !d.IsLVM() || !strings.HasPrefix(d.DMName, prefix) || d.LVMRole() != "" {
			continue
		}
		loc := e.sys.Classify(d)
		loc.Path = "/dev/" + d.Name
		s, lev := e.statusOf(loc)
		if s.rank() > st.rank() || st == Skip {
			st = s
		}
		ev = append(ev, lev...)
	}
	if len(ev) == 0 {
		return Skip, []string{e.t("ev.libvirt.novg", vg)}
	}
	return st, ev
}

// libvirt.leftover: image files in pool directories that no domain, backing
// chain or snapshot uses: typically the plaintext original of a migrated
// disk, still holding every mail the guest stored.
func (e *env) checkLeftovers(used map[string]bool) {
	const id = "libvirt.leftover"
	n, skipped := 0, 0
	var dirs []string
	for _, p := range e.pools() {
		if p.Path == "" || p.VG != "" {
			continue
		}
		dirs = append(dirs, p.Path)
		ents, err := rootfs.ReadDir(e.fs, p.Path)
		if err != nil {
			dirs = dirs[:len(dirs)-1]
			if !e.absent(p.Path) {
				skipped++
				e.skip(id, p.Path, e.t("ev.unreadable", p.Path, err))
			}
			continue
		}
		for _, ent := range ents {
			f := path.Join(p.Path, ent.Name())
			if !ent.Type().IsRegular() || used[e.resolved(f)] || strings.HasSuffix(ent.Name(), ".iso") {
				continue
			}
			n++
			l := layer{Kind: "file", Path: f}
			img := e.probeImage(f)
			l.Format = img.format
			st, ev := e.layerStatus(l)
			if img.size > 0 {
				ev = append(ev, e.t("ev.size", humanSize(img.size)))
			}
			e.add(id, st, f, append([]string{e.t("ev.libvirt.unused")}, ev...)...)
		}
	}
	if n == 0 && len(dirs) > 0 {
		e.add(id, Pass, strings.Join(dirs, ", "), e.t("ev.libvirt.noleftovers", strings.Join(dirs, ", ")))
	} else if n == 0 && skipped == 0 {
		e.na(id, "libvirt", e.t("ev.libvirt.nopooldirs"))
	}
}

func humanSize(b int64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := int64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}
