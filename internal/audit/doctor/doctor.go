// Package doctor checks what a host offers cryptshift: kernel device-mapper,
// dm-crypt, loop and XTS-AES support, the cryptsetup, lvm, qemu-img and
// filesystem tools with their versions, argon2id in cryptsetup, a reachable
// libvirt, privileges and the kernel's random generator. It says what to
// install or enable, and which verbs can run on this host.
//
// Kernel facts are read through a root directory (/proc, /sys, /lib/modules,
// /boot), so a fixture tree replays a host; probes of the running kernel
// (opening /dev/mapper/control, getrandom) happen only when the root is "/".
// Tools run through execx, so unit tests record their exact arguments.
package doctor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
)

// Status is the outcome of one check.
type Status string

// Check outcomes. WARN means the need is met with a caveat the admin should
// read; FAIL means it is not met; SKIP means it could not be checked because
// something it builds on is missing.
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
	Skip Status = "skip"
)

// Check is one fact about the host.
type Check struct {
	ID     string `json:"id"`
	Title  string `json:"title"`
	Status Status `json:"status"`
	Found  string `json:"found"`
	Fix    string `json:"fix,omitempty"`
}

// met reports whether a capability that needs this check can rely on it.
func (c Check) met() bool { return c.Status == OK || c.Status == Warn }

// Capability is something cryptshift does, and whether this host can.
type Capability struct {
	Name     string   `json:"name"`
	Summary  string   `json:"summary"`
	Ready    bool     `json:"ready"`
	Needs    []string `json:"needs"`
	Blockers []string `json:"blockers,omitempty"`
	Note     string   `json:"note,omitempty"`
}

// Report is the whole answer.
type Report struct {
	Schema       string       `json:"schema"`
	Host         string       `json:"host"`
	Kernel       string       `json:"kernel"`
	Root         string       `json:"root"`
	Version      string       `json:"version"`
	Checks       []Check      `json:"checks"`
	Capabilities []Capability `json:"capabilities"`
	// For lists the capabilities whose readiness decides Ready (and so the
	// exit status).
	For   []string `json:"for"`
	Ready bool     `json:"ready"`
}

// Schema names the JSON document's format.
const Schema = "cryptshift.doctor/v1"

// Options say where and how to look.
type Options struct {
	// Root is the tree whose /proc, /sys, /lib/modules and /boot are read;
	// "" or "/" is this system.
	Root string
	// Connect is the libvirt URI or socket path (see libvirt.ParseConnect).
	Connect string
	// For lists the capabilities that must be ready; nil means
	// DefaultFor.
	For []string
	// Version is cryptshift's own version string, for the report.
	Version string

	// Run runs tools; nil means execx.Exec{}.
	Run execx.Runner
	// LookPath finds a program; nil means exec.LookPath with a fallback to
	// the sbin directories.
	LookPath func(prog string) (string, error)
	// Libvirt connects and returns the daemon's version; nil means a real
	// connection through package libvirt with LibvirtTimeout.
	Libvirt func(connect string) (version uint64, socket string, err error)
	// LibvirtTimeout bounds the libvirt probe; 0 means 5s.
	LibvirtTimeout time.Duration
	// Euid is the effective user id; nil means os.Geteuid.
	Euid func() int
	// TempDir holds the argon2id probe's scratch file; "" means os.TempDir.
	TempDir string
	// Live enables probes of the running kernel (getrandom, opening
	// /dev/mapper/control). nil means: when Root is "/".
	Live *bool
}

// Capability names, in the order reports list them.
const (
	CapPlan           = "plan"
	CapVerifyCaptured = "verify-captured"
	CapVerify         = "verify"
	CapMigratePool    = "migrate-pool"
	CapApply          = "apply"
	CapMigrateVG      = "migrate-vg"
)

// DefaultFor is what "ready" means without --for: every verb cryptshift
// implements.
var DefaultFor = []string{CapPlan, CapVerifyCaptured, CapVerify, CapMigratePool, CapApply, CapMigrateVG}

// capabilities maps each capability to the checks it needs.
var capabilities = []struct {
	name, summary string
	needs         []string
	note          string
}{
	{CapPlan, "plan layouts against saved inventories (plan --inventory), print plans and scripts", nil, ""},
	{CapVerifyCaptured, "verify and inspect captured trees (--root DIR) and guest disk images (--image)", nil, ""},
	{CapVerify, "verify, inspect and capture this host", nil, ""},
	{CapMigratePool, "migrate libvirt guests into an encrypted storage pool (migrate --to pool:NAME), and roll back", []string{"tool.qemu-img", "libvirt"}, ""},
	{CapApply, "apply and roll back LUKS-on-LVM layouts on block devices", []string{
		"kernel.device-mapper", "kernel.dm-crypt", "kernel.xts-aes",
		"tool.cryptsetup", "cryptsetup.argon2id", "tool.lvm", "tool.e2fsprogs", "tool.util-linux", "privileges"}, ""},
	{CapMigrateVG, "migrate libvirt guests onto LUKS2 logical volumes (migrate --to vg:NAME)", []string{
		"kernel.device-mapper", "kernel.dm-crypt", "kernel.xts-aes",
		"tool.cryptsetup", "cryptsetup.argon2id", "tool.lvm", "tool.qemu-img", "libvirt", "privileges"}, ""},
}

// Capabilities lists the capability names doctor knows, in report order.
func Capabilities() []string {
	var names []string
	for _, c := range capabilities {
		names = append(names, c.name)
	}
	return names
}

// CapabilitySummary says what a capability lets cryptshift do ("" for an
// unknown name); doctor's --help is made from it.
func CapabilitySummary(name string) string {
	for _, c := range capabilities {
		if c.name == name {
			return c.summary
		}
	}
	return ""
}

// Run checks the host and evaluates every capability.
func Run(ctx context.Context, o Options) (*Report, error) {
	o = o.withDefaults()
	for _, f := range o.For {
		if !known(f) {
			return nil, fmt.Errorf("cannot check readiness for %q: the capabilities are %s", f, strings.Join(Capabilities(), ", "))
		}
	}
	fsys := rootfs.Dir(o.Root)
	k := readKernel(fsys)
	r := &Report{Schema: Schema, Root: o.Root, Version: o.Version, Kernel: k.release}
	r.Host = strings.TrimSpace(string(readOr(fsys, "/proc/sys/kernel/hostname")))
	if r.Host == "" {
		r.Host = strings.TrimSpace(string(readOr(fsys, "/etc/hostname")))
	}
	live := *o.Live
	dm := k.deviceMapper(live)
	r.Checks = append(r.Checks,
		dm,
		k.dmCrypt(dm),
		k.loop(),
		k.xtsAES(),
	)
	t := &tools{o: o, ctx: ctx}
	cs := t.cryptsetup()
	r.Checks = append(r.Checks,
		cs,
		t.argon2id(cs),
		t.lvm(),
		t.need("tool.e2fsprogs", "filesystem tools (e2fsprogs)", "e2fsprogs", "mkfs.ext4"),
		t.need("tool.util-linux", "swap, wipe and mount tools (util-linux, mount)", "util-linux mount", "mkswap", "wipefs", "mount", "swapon"),
		t.optional("tool.xfsprogs", "XFS (only for layouts with xfs filesystems)", "xfsprogs", "mkfs.xfs"),
		t.optional("tool.dosfstools", "FAT (only for layouts with an EFI system partition)", "dosfstools", "mkfs.vfat"),
		initramfs(fsys),
		t.qemuImg(),
		t.libvirt(),
		privileges(o.Euid()),
		entropy(fsys, k, live),
	)
	byID := map[string]Check{}
	for _, c := range r.Checks {
		byID[c.ID] = c
	}
	for _, c := range capabilities {
		cp := Capability{Name: c.name, Summary: c.summary, Ready: true, Needs: append([]string{}, c.needs...), Note: c.note}
		if cp.Needs == nil {
			cp.Needs = []string{}
		}
		for _, id := range c.needs {
			if !byID[id].met() {
				cp.Blockers = append(cp.Blockers, id)
				cp.Ready = false
			}
		}
		if c.name == CapVerify && o.Euid() != 0 {
			cp.Note = "not root: LUKS headers and /proc/1 cannot be read, so their checks SKIP"
		}
		r.Capabilities = append(r.Capabilities, cp)
	}
	r.For = append([]string{}, o.For...)
	r.Ready = true
	for _, f := range r.For {
		for _, c := range r.Capabilities {
			if c.Name == f && !c.Ready {
				r.Ready = false
			}
		}
	}
	return r, nil
}

// NotReady lists the capabilities in For that are not ready.
func (r *Report) NotReady() []string {
	var out []string
	for _, f := range r.For {
		for _, c := range r.Capabilities {
			if c.Name == f && !c.Ready {
				out = append(out, f)
			}
		}
	}
	return out
}

func known(name string) bool {
	for _, c := range capabilities {
		if c.name == name {
			return true
		}
	}
	return false
}

func (o Options) withDefaults() Options {
	if o.Root == "" {
		o.Root = "/"
	}
	if o.Run == nil {
		o.Run = execx.Exec{}
	}
	if o.LookPath == nil {
		o.LookPath = lookPath
	}
	if o.LibvirtTimeout == 0 {
		o.LibvirtTimeout = 5 * time.Second
	}
	if o.Libvirt == nil {
		o.Libvirt = dialLibvirt(o.LibvirtTimeout)
	}
	if o.Euid == nil {
		o.Euid = os.Geteuid
	}
	if o.TempDir == "" {
		o.TempDir = os.TempDir()
	}
	if o.Live == nil {
		live := filepath.Clean(o.Root) == "/"
		o.Live = &live
	}
	if len(o.For) == 0 {
		o.For = DefaultFor
	}
	// Deterministic output: --for given in any order reads the same.
	o.For = append([]string{}, o.For...)
	sort.SliceStable(o.For, func(i, j int) bool { return capIndex(o.For[i]) < capIndex(o.For[j]) })
	return o
}

func capIndex(name string) int {
	for i, c := range capabilities {
		if c.name == name {
			return i
		}
	}
	return len(capabilities)
}

func readOr(fsys rootfs.FS, name string) []byte {
	b, _ := rootfs.ReadFile(fsys, name)
	return b
}
