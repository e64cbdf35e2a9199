package verify

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"github.com/cryptshift/cryptshift/internal/hostview/sysconf"
)

// corePattern returns the live kernel.core_pattern (if readable) and the
// persistent one from sysctl.d (if set).
func (e *env) corePattern() (live string, haveLive bool, conf sysconf.SysctlSetting, haveConf bool) {
	if e.sys != nil {
		if s, ok := e.read("/proc/sys/kernel/core_pattern"); ok {
			live, haveLive = strings.TrimRight(s, "\n"), true
		}
	}
	sc := sysconf.ReadSysctl(e.fs)
	conf, haveConf = sc["kernel.core_pattern"]
	return
}

// coreHandler names the program a piped core_pattern hands dumps to.
func coreHandler(pattern string) string {
	if !strings.HasPrefix(pattern, "|") {
		return ""
	}
	f := strings.Fields(strings.TrimPrefix(pattern, "|"))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// usesSystemdCoredump reports whether dumps go to systemd-coredump now
// (live) or after boot (its sysctl.d file, image or capture).
func (e *env) usesSystemdCoredump() bool {
	live, hl, conf, hc := e.corePattern()
	if hl {
		return path.Base(coreHandler(live)) == "systemd-coredump"
	}
	return hc && path.Base(coreHandler(conf.Value)) == "systemd-coredump"
}

// coredump.pattern: where the kernel writes a core dump (core(5)).
func checkCorePattern(e *env) {
	const id = "coredump.pattern"
	live, hl, conf, hc := e.corePattern()
	type pat struct{ value, source string }
	var pats []pat
	if hl {
		pats = append(pats, pat{live, "/proc/sys/kernel/core_pattern"})
	}
	if hc && (!hl || conf.Value != live) {
		pats = append(pats, pat{conf.Value, conf.File})
	}
	if e.sys != nil && !hl {
		// Every running kernel has /proc/sys/kernel/core_pattern: the value
		// in force cannot be told, whatever sysctl.d says for the next boot.
		ev := []string{e.t("ev.notcaptured", "/proc/sys/kernel/core_pattern")}
		if hc {
			ev = append(ev, fmt.Sprintf("%s: kernel.core_pattern = %s (%s)", conf.File, conf.Value, e.t("ev.core.nextboot")))
		}
		e.skip(id, "kernel.core_pattern", ev...)
		return
	}
	if len(pats) == 0 {
		pats = append(pats, pat{"core", e.t("ev.core.kerneldefault")})
	}
	for _, p := range pats {
		src := fmt.Sprintf("%s: kernel.core_pattern = %s", p.source, p.value)
		st, ev := e.coreDestination(p.value)
		e.add(id, st, "kernel.core_pattern", append([]string{src}, ev...)...)
	}
}

// coreDestination judges one core_pattern value.
func (e *env) coreDestination(pattern string) (Status, []string) {
	if h := coreHandler(pattern); h != "" {
		switch path.Base(h) {
		case "systemd-coredump":
			return Pass, []string{e.t("ev.core.systemd")}
		case "false", "true":
			return Pass, []string{e.t("ev.core.discard", h)}
		case "apport":
			loc := e.locate("/var/crash")
			st, ev := e.statusOf(loc)
			return st, append([]string{e.t("ev.core.handler", h, "/var/crash")}, ev...)
		case "abrt-hook-ccpp":
			loc := e.locate("/var/spool/abrt")
			st, ev := e.statusOf(loc)
			return st, append([]string{e.t("ev.core.handler", h, "/var/spool/abrt")}, ev...)
		}
		return Warn, []string{e.t("ev.core.unknownhandler", h)}
	}
	if strings.HasPrefix(pattern, "/") {
		dir := path.Dir(pattern)
		if i := strings.IndexByte(dir, '%'); i >= 0 { // a template in a directory name
			dir = path.Dir(dir[:i] + "x")
		}
		loc := e.locate(dir)
		return e.statusOf(loc)
	}
	// A relative pattern is created in the crashing process's working
	// directory (core(5)): any writable filesystem may receive it.
	return e.anyFilesystem()
}

// anyFilesystem judges "could land anywhere": the worst class among block
// filesystems; plaintext root is a FAIL, other plaintext mounts a WARN.
func (e *env) anyFilesystem() (Status, []string) {
	ev := []string{e.t("ev.core.cwd")}
	st := Pass
	for _, mp := range e.mountPoints() {
		loc := e.locate(mp)
		switch loc.Class {
		case blockstack.Plaintext:
			if mp == "/" {
				st = Fail
			} else if st != Fail {
				st = Warn
			}
			ev = append(ev, e.where(loc))
		case blockstack.Unknown:
			if st == Pass {
				st = Warn
			}
			ev = append(ev, e.where(loc))
		}
	}
	return st, ev
}

// mountPoints lists the mount points of disk-backed filesystems: from
// mountinfo live, from fstab for images.
func (e *env) mountPoints() []string {
	var out []string
	if e.sys != nil {
		for _, m := range e.sys.Mounts {
			if m.Major != 0 || m.FSType == "btrfs" {
				out = append(out, m.MountPoint)
			}
		}
	} else {
		for _, f := range e.fstab {
			if strings.HasPrefix(f.File, "/") && f.VFSType != "swap" && !ramFSType(f.VFSType) {
				out = append(out, f.File)
			}
		}
	}
	sort.Strings(out)
	return dedup(out)
}

func ramFSType(t string) bool { return t == "tmpfs" || t == "ramfs" }

// coredump.systemd: systemd-coredump keeps dumps in
// /var/lib/systemd/coredump (Storage=external, the default) or in the
// journal (coredump.conf(5)).
func checkSystemdCoredump(e *env) {
	const id = "coredump.systemd"
	if !e.usesSystemdCoredump() {
		e.na(id, "systemd-coredump", e.t("ev.coredump.notused"))
		return
	}
	conf, _ := sysconf.ReadSystemdConf(e.fs, "systemd/coredump.conf")
	storage, src := "external", "coredump.conf: Storage= "+e.t("ev.default")
	if s, ok := conf["Coredump.Storage"]; ok {
		storage, src = strings.ToLower(s.Value), s.File+": Storage="+s.Value
	}
	if s, ok := conf["Coredump.ProcessSizeMax"]; ok && s.Value == "0" {
		e.add(id, Pass, "systemd-coredump", s.File+": ProcessSizeMax=0", e.t("ev.coredump.off"))
		return
	}
	switch storage {
	case "none":
		e.add(id, Pass, "systemd-coredump", src, e.t("ev.coredump.off"))
	case "journal":
		p := "/run/log/journal"
		if e.exists("/var/log/journal") {
			p = "/var/log/journal"
		}
		e.locationCheck(id, p, p, src)
	default:
		e.locationCheck(id, "/var/lib/systemd/coredump", "/var/lib/systemd/coredump", src)
	}
}

// coredump.crash-dir: apport and kdump-tools write to /var/crash.
func checkCrashDir(e *env) {
	const id = "coredump.crash-dir"
	if !e.exists("/var/crash") {
		e.naIfAbsent(id, "/var/crash", "/var/crash")
		return
	}
	e.locationCheck(id, "/var/crash", "/var/crash")
}

// kdumpFSTypes are the local filesystem targets of kdump.conf(5): "<fs
// type> <device>" mounts that device in the crash kernel and writes the
// vmcore under "path" on it.
var kdumpFSTypes = map[string]bool{"ext2": true, "ext3": true, "ext4": true, "xfs": true, "btrfs": true, "minix": true, "vfat": true}

// kdumpConf judges a RHEL-style /etc/kdump.conf: "raw DEV" writes the
// vmcore straight onto the device; "<fs> DEV" onto that device's
// filesystem (path relative to it); nfs and ssh elsewhere; with no target
// the vmcore goes to "path" (default /var/crash) on the running layout.
func (e *env) kdumpConf(id, s string, evidence []string) {
	dir, target, kind := "/var/crash", "", ""
	line := 0
	for i, l := range strings.Split(s, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch {
		case f[0] == "path":
			dir = f[1]
		case f[0] == "nfs" || f[0] == "ssh" || f[0] == "raw" || kdumpFSTypes[f[0]]:
			kind, target, line = f[0], f[1], i+1
		}
	}
	src := e.line("/etc/kdump.conf", line) + fmt.Sprintf(": %s %s", kind, target)
	switch {
	case kind == "nfs" || kind == "ssh":
		e.add(id, Warn, "kdump", append(evidence, src, e.t("ev.kdump.remote"))...)
	case kind == "raw" || kind != "":
		loc := e.locateSpec(target)
		st, ev := e.statusOf(loc)
		what := e.t("ev.kdump.raw")
		if kind != "raw" {
			what = e.t("ev.kdump.fs", kind, dir)
		}
		e.add(id, st, target, append(append(evidence, src, what), ev...)...)
	default:
		loc := e.locateConfigured(dir)
		st, ev := e.statusOf(loc)
		e.add(id, st, dir, append(append(evidence, "/etc/kdump.conf: path "+dir), ev...)...)
	}
}

// locateConfigured says where a directory lands once every fstab
// filesystem is mounted: a crash kernel or the next boot mounts what fstab
// lists even if it is not mounted now.
func (e *env) locateConfigured(dir string) blockstack.Location {
	loc := e.locate(dir)
	if e.sys == nil {
		return loc
	}
	cur := "/"
	if loc.Mount != nil {
		cur = loc.Mount.MountPoint
	}
	var best *sysconf.FstabEntry
	for i := range e.fstab {
		f := &e.fstab[i]
		mp := path.Clean(f.File)
		if f.VFSType == "swap" || !strings.HasPrefix(mp, "/") || !(dir == mp || strings.HasPrefix(dir, mp+"/")) || len(mp) <= len(cur) {
			continue
		}
		if best == nil || len(mp) > len(path.Clean(best.File)) {
			best = f
		}
	}
	if best == nil {
		return loc
	}
	in := e.locateSpec(best.Spec)
	in.Path = dir
	in.Evidence = e.line("/etc/fstab", best.Line) + fmt.Sprintf(": %s %s %s (%s) → %s", best.Spec, best.File, best.VFSType, e.t("ev.notmounted"), in.Evidence)
	return in
}

// kdump.target: a kernel crash dump holds all of RAM, including the
// volume keys of every open LUKS container.
func checkKdump(e *env) {
	const id = "kdump.target"
	var evidence []string
	armed, loadedKnown := false, false
	if e.sys != nil {
		if s, ok := e.read("/sys/kernel/kexec_crash_loaded"); ok {
			evidence = append(evidence, "/sys/kernel/kexec_crash_loaded = "+strings.TrimSpace(s))
			armed = strings.TrimSpace(s) == "1"
			loadedKnown = true
		}
		if s, ok := e.read("/proc/cmdline"); ok {
			if v, ok := cmdlineParam(s, "crashkernel"); ok {
				evidence = append(evidence, "/proc/cmdline crashkernel="+v)
			}
		}
	}
	found := false
	if s, ok := e.read("/etc/default/kdump-tools"); ok { // Debian/Ubuntu kdump-tools
		found = true
		v := sysconf.ParseShellVars(s)
		if v["USE_KDUMP"] == "0" {
			e.add(id, Pass, "kdump-tools", append(evidence, "/etc/default/kdump-tools: USE_KDUMP=0")...)
		} else if v["SSH"] != "" || v["NFS"] != "" {
			e.add(id, Warn, "kdump-tools", append(evidence, "/etc/default/kdump-tools: SSH="+v["SSH"]+" NFS="+v["NFS"], e.t("ev.kdump.remote"))...)
		} else {
			dir := v["KDUMP_COREDIR"]
			if dir == "" {
				dir = "/var/crash" // kdump-tools default
			}
			// The crash kernel's initramfs mounts filesystems from fstab:
			// a dump directory on a filesystem that is not mounted now
			// (noauto) lands there, not on what covers it today.
			loc := e.locateConfigured(dir)
			st, ev := e.statusOf(loc)
			e.add(id, st, dir, append(append(evidence, "/etc/default/kdump-tools: KDUMP_COREDIR="+dir), ev...)...)
		}
	}
	if s, ok := e.read("/etc/kdump.conf"); ok { // RHEL/Fedora kexec-tools
		found = true
		e.kdumpConf(id, s, evidence)
	}
	if found {
		return
	}
	if armed {
		e.add(id, Warn, "kdump", append(evidence, e.t("ev.kdump.armedunknown"))...)
		return
	}
	// Only the kernel's own word says no crash kernel is loaded: a
	// crashkernel= reservation on the command line says memory is set
	// aside, not that nothing was loaded into it.
	if e.sys != nil && !loadedKnown {
		if !e.absent("/sys/kernel/kexec_crash_loaded") {
			e.skip(id, "kdump", append(evidence, e.t("ev.notcaptured", "/sys/kernel/kexec_crash_loaded"))...)
			return
		}
		// CONFIG_CRASH_DUMP off: the kernel cannot load a crash kernel at all.
		evidence = append(evidence, e.t("ev.kdump.nokexec"))
	}
	e.add(id, Pass, "kdump", append(evidence, e.t("ev.kdump.none"))...)
}
