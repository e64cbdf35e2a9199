package verify

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"github.com/cryptshift/cryptshift/internal/hostview/sysconf"
)

// swap.device: every active swap area must be encrypted (or RAM). Both
// LVM-on-LUKS (swap LV inside an encrypted PV) and LUKS-on-LVM (a crypt
// node on the swap LV) count: the walk goes down to the disks.
func checkSwapActive(e *env) {
	const id = "swap.device"
	if !e.sys.HaveSwaps() {
		e.skip(id, "/proc/swaps", e.t("ev.noswaps"))
		return
	}
	if len(e.sys.Swaps) == 0 {
		e.add(id, Pass, e.t("subj.noswap"), e.t("ev.swaps.none"))
		return
	}
	for _, sw := range e.sys.Swaps {
		loc := e.swapLocation(sw)
		st, ev := e.statusOf(loc)
		if loc.Class == blockstack.RAM {
			st, ev = Pass, []string{e.where(loc)} // swap in RAM (zram) is not written anywhere
		}
		if sw.Deleted {
			ev = append(ev, e.t("ev.swap.deleted"))
		}
		e.add(id, st, sw.Filename, ev...)
	}
}

// swap.fstab: swap configured for the next boot.
func checkSwapFstab(e *env) {
	const id = "swap.fstab"
	if e.fstabErr != nil {
		if e.absent("/etc/fstab") && errors.Is(e.fstabErr, fs.ErrNotExist) {
			e.na(id, "/etc/fstab", e.t("ev.absent", "/etc/fstab"))
		} else {
			e.skip(id, "/etc/fstab", e.unreadable("/etc/fstab", e.fstabErr))
		}
		return
	}
	n := 0
	for _, f := range e.fstab {
		if f.VFSType != "swap" {
			continue
		}
		n++
		loc := e.fstabSwapLocation(f)
		st, ev := e.statusOf(loc)
		if loc.Class == blockstack.RAM {
			st, ev = Pass, []string{e.where(loc)}
		}
		ev = append([]string{e.line("/etc/fstab", f.Line) + fmt.Sprintf(": %s %s swap", f.Spec, f.File)}, ev...)
		e.add(id, st, f.Spec, ev...)
	}
	if n == 0 {
		e.add(id, Pass, "/etc/fstab", e.t("ev.fstab.noswap"))
	}
}

// swap.crypttab: crypttab's "swap" and "tmp" options run mkswap/mkfs on the
// named device at every boot (crypttab(5)); a kernel name like /dev/sdb2
// can point at another disk after a hardware change and destroy it, or
// leave the intended swap unencrypted.
func checkSwapCrypttab(e *env) {
	const id = "swap.crypttab"
	if e.crypttabErr != nil {
		e.crypttabSkip(id)
		return
	}
	n := 0
	for _, c := range e.crypttab {
		if !c.HasOption("swap") && !c.HasOption("tmp") {
			continue
		}
		n++
		ev := e.line("/etc/crypttab", c.Line) + fmt.Sprintf(": %s %s %s %s", c.Name, c.Device, orDash(c.KeyFile), strings.Join(c.Options, ","))
		st := Pass
		if sysconf.UnstableDevice(c.Device) {
			st = Warn
		}
		if !c.RandomKey() {
			e.addFix(id, id+".fix.key", Warn, c.Name, ev, e.t("ev.crypttab.swapkey"))
			continue
		}
		e.add(id, st, c.Name, ev)
	}
	if n == 0 {
		e.na(id, "/etc/crypttab", e.t("ev.crypttab.noswap"))
	}
}

func orDash(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// swap.zram-writeback: zram writes idle/incompressible pages to its
// backing device uncompressed and unencrypted (zram.rst "writeback").
func checkZram(e *env) {
	const id = "swap.zram-writeback"
	n := 0
	for _, d := range e.sys.Devices {
		if d.Kind != blockstack.KindZram || d.Size == 0 {
			continue
		}
		n++
		if d.ZramBackingDev == "" {
			e.add(id, Pass, "/dev/"+d.Name, e.t("ev.zram.nowb", d.Name))
			continue
		}
		loc := e.sys.Classify(d)
		loc.Path = "/dev/" + d.Name
		st, ev := e.statusOf(loc)
		if loc.Class == blockstack.RAM {
			st = Pass
		}
		e.add(id, st, "/dev/"+d.Name, ev...)
	}
	if n == 0 {
		e.na(id, "zram", e.t("ev.zram.none"))
	}
}

// hibernate.resume: the hibernation image (all of RAM, keys of open
// containers included) goes to the resume device, and only ever to an
// active swap area: swsusp_write finds its swap area by the resume device
// (kernel/power/swap.c swsusp_swap_check, swap_type_of) and fails when no
// active swap area matches it. A resume device that is not an active swap
// area is therefore a broken setting (hibernation fails), not a leak.
func checkResume(e *env) {
	const id = "hibernate.resume"
	var targets []resumeTarget
	none := e.t("ev.resume.none")
	if e.sys != nil {
		mm, ok := e.read("/sys/power/resume")
		switch {
		case ok && strings.TrimSpace(mm) != "" && strings.TrimSpace(mm) != "0:0":
			mm = strings.TrimSpace(mm)
			targets = append(targets, resumeTarget{"/sys/power/resume = " + mm, "", e.sys.DeviceByMajMin(mm), mm})
		case !ok && !e.absent("/sys/power/resume"):
			e.skip(id, "/sys/power/resume", e.t("ev.notcaptured", "/sys/power/resume"))
			return
		case !ok:
			// CONFIG_HIBERNATION off: the kernel cannot write an image.
			none = e.t("ev.resume.nokernel")
		}
	}
	targets = append(targets, e.resumeConfig()...)
	if len(targets) == 0 {
		e.add(id, Pass, e.t("subj.noresume"), none)
		return
	}
	for _, t := range targets {
		e.resumeResult(id, t)
	}
}

type resumeTarget struct {
	source string             // where it is configured
	spec   string             // resume=SPEC, or ""
	dev    *blockstack.Device // live device, when known
	majmin string
}

// resumeConfig reads the configured resume device: the kernel command line
// (resume=, proc/cmdline live, GRUB_CMDLINE_LINUX in /etc/default/grub)
// and initramfs-tools' conf.d/resume (RESUME=).
func (e *env) resumeConfig() []resumeTarget {
	var out []resumeTarget
	if s, ok := e.read("/proc/cmdline"); ok {
		if v, ok := cmdlineParam(s, "resume"); ok {
			out = append(out, resumeTarget{source: "/proc/cmdline resume=" + v, spec: v})
		}
	}
	if s, ok := e.read("/etc/default/grub"); ok {
		vars := sysconf.ParseShellVars(s)
		for _, k := range []string{"GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"} {
			if v, ok := cmdlineParam(vars[k], "resume"); ok {
				out = append(out, resumeTarget{source: "/etc/default/grub " + k + " resume=" + v, spec: v})
			}
		}
	}
	for _, p := range []string{"/etc/initramfs-tools/conf.d/resume", "/etc/initramfs-tools/conf.d/resume.conf"} {
		if s, ok := e.read(p); ok {
			if v := sysconf.ParseShellVars(s)["RESUME"]; v != "" && v != "none" && v != "auto" {
				out = append(out, resumeTarget{source: p + " RESUME=" + v, spec: v})
			}
		}
	}
	return out
}

func (e *env) resumeResult(id string, t resumeTarget) {
	var loc blockstack.Location
	switch {
	case t.dev != nil:
		loc = e.sys.Classify(t.dev)
		loc.Path = "/dev/" + t.dev.Name
	case t.spec != "":
		loc = e.locateSpec(t.spec)
	default:
		e.addKind(id, "hibernate.resume.fix.inactive", Warn, FindingConfig, t.source, t.source+": "+e.t("ev.nodevice"), e.t("ev.resume.fails"))
		return
	}
	subject := t.spec
	if subject == "" {
		subject = loc.Path
	}
	swap, known := e.isActiveSwap(t, loc)
	if known && !swap {
		e.addKind(id, "hibernate.resume.fix.inactive", Warn, FindingConfig, subject, t.source, e.where(loc), e.t("ev.resume.notswap"), e.t("ev.resume.fails"))
		return
	}
	st, ev := e.statusOf(loc)
	if loc.Class == blockstack.RAM {
		st = Fail // a hibernation image in zram would not survive power-off; treat as misconfiguration
	}
	if swap {
		ev = append(ev, e.t("ev.resume.isswap"))
	}
	e.add(id, st, subject, append([]string{t.source}, ev...)...)
}

// isActiveSwap reports whether the resume device is an active swap area
// (live and captured systems: /proc/swaps; images: a swap entry of the
// guest's fstab). known is false when that cannot be told.
func (e *env) isActiveSwap(t resumeTarget, loc blockstack.Location) (swap, known bool) {
	if e.sys == nil {
		for _, f := range e.fstab {
			if f.VFSType != "swap" {
				continue
			}
			if f.Spec == t.spec || e.locateSpec(f.Spec).Path == loc.Path && loc.Path != "" {
				return true, true
			}
			if p := e.image.partForSpec(f.Spec); p != nil && p == e.image.partForSpec(t.spec) {
				return true, true
			}
		}
		return false, e.fstabErr == nil
	}
	if !e.sys.HaveSwaps() {
		return false, false
	}
	dev := loc.Device
	if dev == nil {
		dev = t.dev
	}
	if dev == nil {
		return false, true
	}
	for _, sw := range e.sys.Swaps {
		if sw.Type == "file" {
			// A swap file: the kernel finds it by the device of its
			// filesystem plus resume_offset.
			if l := e.locate(sw.Filename); l.Device == dev {
				return true, true
			}
			continue
		}
		if d := e.sys.DeviceByPath(sw.Filename); d == dev {
			return true, true
		}
	}
	return false, true
}

// cmdlineParam returns the value of name= on a kernel command line.
func cmdlineParam(cmdline, name string) (string, bool) {
	v, ok := "", false
	for _, f := range strings.Fields(cmdline) {
		if x, found := strings.CutPrefix(f, name+"="); found {
			v, ok = strings.Trim(x, `"`), true // the last one wins, as in the kernel
		}
	}
	return v, ok
}
