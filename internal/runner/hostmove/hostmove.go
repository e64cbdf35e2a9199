// Package hostmove moves the running host's operating system onto an
// applied layout mounted at the target (cryptshift migrate-host): each
// source filesystem copied onto its planned volume, a live pass and a
// final pass with the named services stopped, then the new root made
// bootable: crypttab and fstab from apply, initramfs-tools set up to unlock
// the root in the initramfs (and over SSH into dropbear where the layout
// asks for it), the initramfs regenerated in a chroot and checked, GRUB
// installed on the new disks.
//
// Every step runs on the one step engine (internal/runner/engine): the
// journal lives on the target (the source is never written), a crash or
// kill is resumed with --resume, and the dry run prints the very steps.
package hostmove

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cryptshift/cryptshift/internal/doors/clevis"
	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"github.com/cryptshift/cryptshift/internal/hostview/sysconf"
	"github.com/cryptshift/cryptshift/internal/model/layout"
	"github.com/cryptshift/cryptshift/internal/runner/engine"
	"github.com/cryptshift/cryptshift/internal/runner/guard"
	"github.com/cryptshift/cryptshift/internal/runner/unlock"
	"github.com/cryptshift/cryptshift/luks"
)

// Journal kind and version of a host move.
const (
	JournalKind    = "migrate-host"
	JournalVersion = 1
)

// Initramfs module policies (initramfs-tools MODULES=).
const (
	ModulesMost = "most" // Debian's default: boots on other hardware too
	ModulesDep  = "dep"  // only what this machine needs: small and fast to build
)

// Options say what to move where.
type Options struct {
	Layout *layout.Layout
	// Root is where the running system is read ("/" live; a captured tree
	// in tests). Target and every mount point are paths inside it.
	Root string
	// Target is where apply mounted the layout (default /target).
	Target string
	// Devices overrides the layout's disk devices (NAME=PATH, as for
	// apply); used for GRUB's BIOS install.
	Devices map[string]string
	// StopServices are stopped before the final copy pass (systemd units).
	StopServices []string
	// KernelCmdline are extra kernel parameters for the new system
	// (console=ttyS0, ...); ip= comes from the layout's SSH unlock.
	KernelCmdline []string
	// InitramfsModules is initramfs-tools' MODULES policy: most (default)
	// or dep.
	InitramfsModules string
	// JournalPath defaults to TARGET/var/lib/cryptshift/migrate-host-NAME.journal.
	JournalPath string
	Resume      bool

	// Passphrase opens the root volume now: Clevis bindings from the
	// layout's keys.unlock (tang, tpm2) need it. Never journalled.
	Passphrase []byte
	// HTTP fetches Tang advertisements (nil: a client with a timeout);
	// ReadHeader reads LUKS headers (nil: luks.ReadHeader). Test seams.
	HTTP       *http.Client
	ReadHeader func(dev string) (*luks.Header, error)

	Run    execx.Runner
	Report engine.Reporter
	Out    io.Writer

	// CheckEncrypted says whether a directory is on dm-crypt storage
	// (default guard.EncryptedDir on Root; tests replace it).
	CheckEncrypted func(dir string) error
}

// Filesystem is one source filesystem the move copies.
type Filesystem struct {
	Mount  string // where it is mounted on the source
	FSType string
	Source string // its device, for people
	// Onto is where it lands: the target's mount that receives it.
	Onto, OntoSource string
}

// Move is a prepared host move: checked, its steps built, nothing changed.
type Move struct {
	o           Options
	FS          []Filesystem
	RootMapping string // the new root's dm-crypt mapping name (root_crypt)
	esp         string // the ESP's mount point in the new system, "" for none
	biosDisks   []string
	binds       []*bindStep
	notes       []string
	steps       []engine.Step
}

// RefusedError is a move refused before anything changed.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string {
	return "cannot move the host: " + e.Reason + "; nothing was changed"
}

func refuse(format string, a ...any) error {
	return &RefusedError{Reason: fmt.Sprintf(format, a...)}
}

// pseudo are filesystem types that hold no data of the system.
var diskFS = []string{"ext2", "ext3", "ext4", "xfs", "vfat", "f2fs", "jfs", "reiserfs"}

// Prepare checks that the move can be done safely and builds its steps.
// It changes nothing.
func Prepare(o Options) (*Move, error) {
	if o.Layout == nil {
		return nil, errors.New("cannot move the host: no layout")
	}
	if o.Root == "" {
		o.Root = "/"
	}
	if o.Target == "" {
		o.Target = "/target"
	}
	o.Target = path.Clean(o.Target)
	if !path.IsAbs(o.Target) || o.Target == "/" {
		return nil, refuse("the target %q must be an absolute directory other than /", o.Target)
	}
	switch o.InitramfsModules {
	case "":
		o.InitramfsModules = ModulesMost
	case ModulesMost, ModulesDep:
	default:
		return nil, refuse("--initramfs-modules must be most or dep, not %q", o.InitramfsModules)
	}
	for _, s := range o.StopServices {
		if s == "" || strings.ContainsAny(s, " /\t\n") || strings.HasPrefix(s, "-") {
			return nil, refuse("%q is not a systemd unit name", s)
		}
	}
	for _, p := range o.KernelCmdline {
		if p == "" || strings.ContainsAny(p, " \t\n\"'\\$`") {
			return nil, refuse("kernel parameter %q must be one word without quotes", p)
		}
	}
	if o.CheckEncrypted == nil {
		root := o.Root
		o.CheckEncrypted = func(dir string) error { return guard.EncryptedDir(root, dir) }
	}
	if o.JournalPath == "" {
		o.JournalPath = path.Join(o.Target, "var/lib/cryptshift", "migrate-host-"+o.Layout.Name+".journal")
	}
	if o.ReadHeader == nil {
		o.ReadHeader = luks.ReadHeader
	}
	m := &Move{o: o}
	if err := m.check(); err != nil {
		return nil, err
	}
	if err := m.checkBindings(); err != nil {
		return nil, err
	}
	m.build()
	return m, nil
}

// host joins a path of the running system to Root.
func (m *Move) host(p string) string { return filepath.Join(m.o.Root, p) }

// onTarget is a path of the new system as the running system sees it.
func (m *Move) onTarget(p string) string { return path.Join(m.o.Target, p) }

func under(p, dir string) bool {
	return dir == "/" || p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

func (m *Move) check() error {
	o := m.o
	f, err := os.Open(m.host("/proc/self/mountinfo"))
	if err != nil {
		return fmt.Errorf("cannot read the mounts: %w", err)
	}
	mounts, err := blockstack.ParseMountInfo(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("cannot read the mounts: %w", err)
	}
	byPoint := map[string]blockstack.Mount{}
	for _, mt := range mounts {
		byPoint[mt.MountPoint] = mt // the last mount at a point is the one seen
	}
	tgt, ok := byPoint[o.Target]
	if !ok {
		return refuse("%s is not mounted; lay the layout out first with: cryptshift apply -f LAYOUT --target %s", o.Target, o.Target)
	}
	if err := o.CheckEncrypted(o.Target); err != nil {
		return refuse("%s is not on an encrypted volume (%v); the host move copies only onto a layout apply encrypted", o.Target, err)
	}
	m.RootMapping = strings.TrimPrefix(tgt.Source, "/dev/mapper/")
	if m.RootMapping == tgt.Source {
		return refuse("%s is mounted from %s, not from a dm-crypt mapping in /dev/mapper", o.Target, tgt.Source)
	}
	// Every filesystem the layout places must be mounted where apply
	// mounts it, or its data would land on the volume above it.
	for _, want := range m.layoutMounts() {
		if want == "/" {
			continue
		}
		if _, ok := byPoint[m.onTarget(want)]; !ok {
			return refuse("the layout's %s is not mounted at %s; run cryptshift apply (or --resume it) first", want, m.onTarget(want))
		}
	}
	if err := m.checkDistribution(); err != nil {
		return err
	}
	tmpfs := map[string]bool{}
	for _, t := range o.Layout.Tmp {
		if t.Type == layout.TmpTmpfs {
			tmpfs[t.Path] = true
		}
	}
	seen := map[string]bool{}
	for _, mt := range mounts {
		p := mt.MountPoint
		if under(p, o.Target) {
			continue
		}
		switch {
		case mt.FSType == "zfs":
			return refuse("%s is on ZFS; the host move copies ext4/xfs systems booted by initramfs-tools and cannot move a ZFS root safely", p)
		case mt.FSType == "btrfs" && (p == "/" || mt.Root != "/"):
			return refuse("%s is on a btrfs subvolume; the host move cannot recreate btrfs subvolumes, so it refuses rather than flatten them", p)
		}
		if !slices.Contains(diskFS, mt.FSType) || mt.Root != "/" || tmpfs[p] || seen[mt.MajMin()] {
			continue // pseudo filesystems, bind mounts, tmpfs-planned paths, a second mount of one filesystem
		}
		seen[mt.MajMin()] = true
		fs := Filesystem{Mount: p, FSType: mt.FSType, Source: mt.Source}
		// It lands on the deepest target mount that holds its path.
		onto := o.Target
		for tp := range byPoint {
			if under(tp, o.Target) && under(m.onTarget(p), tp) && len(tp) > len(onto) {
				onto = tp
			}
		}
		fs.Onto, fs.OntoSource = onto, byPoint[onto].Source
		m.FS = append(m.FS, fs)
	}
	slices.SortFunc(m.FS, func(a, b Filesystem) int { return strings.Compare(a.Mount, b.Mount) })
	if len(m.FS) == 0 || m.FS[0].Mount != "/" {
		return refuse("the running root filesystem is not one the host move can copy (%s)", strings.Join(diskFS, ", "))
	}
	crypttab, err := os.ReadFile(m.host(m.onTarget("/etc/crypttab")))
	if err != nil || !strings.Contains(string(crypttab), m.RootMapping+" ") {
		return refuse("%s has no crypttab entry for %s; apply writes it: run cryptshift apply (or --resume it) first", m.onTarget("/etc/crypttab"), m.RootMapping)
	}
	if _, err := os.Stat(m.host(m.onTarget("/etc/fstab"))); err != nil {
		return refuse("%s is missing; apply writes it: run cryptshift apply (or --resume it) first", m.onTarget("/etc/fstab"))
	}
	for _, d := range o.Layout.Disks {
		for _, p := range d.Partitions {
			switch p.Type {
			case layout.PartESP:
				m.esp = p.Mount
				if m.esp == "" {
					m.esp = "/boot/efi"
				}
			case layout.PartBIOSBoot:
				dev := d.Device
				if v, ok := o.Devices[d.Name]; ok {
					dev = v
				}
				m.biosDisks = append(m.biosDisks, dev)
			}
		}
	}
	if m.esp == "" && len(m.biosDisks) == 0 {
		return refuse("the layout has neither an EFI system partition nor a bios-boot partition, so GRUB has nowhere to go")
	}
	return m.checkTools()
}

// layoutMounts are the mount points the layout gives filesystems.
func (m *Move) layoutMounts() []string {
	var out []string
	for _, d := range m.o.Layout.Disks {
		for _, p := range d.Partitions {
			if p.Mount != "" {
				out = append(out, p.Mount)
			}
		}
	}
	for _, v := range m.o.Layout.Volumes {
		if v.Mount != "" && v.Purpose != layout.PurposeSwap {
			out = append(out, v.Mount)
		}
	}
	return out
}

// osRelease reads ID and VERSION_ID of the system at dir.
func osRelease(dir string) (map[string]string, error) {
	for _, p := range []string{"etc/os-release", "usr/lib/os-release"} {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err == nil {
			return sysconf.ParseShellVars(string(b)), nil
		}
	}
	return nil, os.ErrNotExist
}

func (m *Move) checkDistribution() error {
	src, err := osRelease(m.o.Root)
	if err != nil {
		return refuse("the running system has no /etc/os-release, so its distribution is unknown")
	}
	debian := src["ID"] == "debian" || slices.Contains(strings.Fields(src["ID_LIKE"]), "debian")
	if !debian {
		return refuse("the running system is %s; the host move sets up Debian's initramfs-tools, cryptsetup-initramfs and GRUB and supports Debian and its derivatives only", layout.Short(src["PRETTY_NAME"]+" "+src["ID"]))
	}
	if dst, err := osRelease(m.host(m.o.Target)); err == nil && (dst["ID"] != src["ID"] || dst["VERSION_ID"] != src["VERSION_ID"]) {
		return refuse("%s already holds %s %s, a different distribution than the running %s %s; move onto a freshly applied layout",
			m.o.Target, layout.Short(dst["ID"]), layout.Short(dst["VERSION_ID"]), src["ID"], src["VERSION_ID"])
	}
	return nil
}

// checkTools checks that the running system has what the new root needs
// (it is a copy of it): the move installs nothing.
func (m *Move) checkTools() error {
	need := map[string]string{
		"/usr/sbin/update-initramfs":                   "initramfs-tools",
		"/usr/share/initramfs-tools/hooks/cryptroot":   "cryptsetup-initramfs",
		"/usr/sbin/grub-install":                       "grub2-common",
		"/usr/sbin/update-grub":                        "grub2-common",
		"/usr/share/initramfs-tools/scripts/local-top": "initramfs-tools",
	}
	if m.esp != "" {
		need["/usr/lib/grub/x86_64-efi"] = "grub-efi-amd64-bin"
	}
	if len(m.biosDisks) > 0 {
		need["/usr/lib/grub/i386-pc"] = "grub-pc-bin"
	}
	if m.ssh() != nil {
		need["/usr/share/initramfs-tools/hooks/dropbear"] = "dropbear-initramfs"
	}
	var missing []string
	for p, pkg := range need {
		if _, err := os.Stat(m.host(p)); err != nil {
			missing = append(missing, fmt.Sprintf("%s (package %s)", p, pkg))
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return refuse("the running system lacks %s; install it first, the new root is a copy of this system", strings.Join(missing, ", "))
	}
	return nil
}

func (m *Move) ssh() *layout.SSHUnlock {
	if u := m.o.Layout.Keys.Unlock; u != nil {
		return u.SSH
	}
	return nil
}

func (m *Move) unlock() *layout.Unlock { return m.o.Layout.Keys.Unlock }

// checkBindings prepares the layout's Clevis bindings of the root volume
// (tang, tpm2): each Tang server must answer now and advertise its pinned
// thumbprint, a TPM must be present, and the root must be LUKS2, or the
// move is refused before anything changes. A binding the root has
// already (apply made it from the same layout) is kept, and then needs no
// passphrase.
func (m *Move) checkBindings() error {
	u := m.unlock()
	if u == nil || (len(u.Tang) == 0 && u.TPM2 == nil) {
		return nil
	}
	need := map[string]string{"/usr/share/initramfs-tools/hooks/clevis": "clevis-initramfs", "/usr/bin/clevis-luks-bind": "clevis-luks"}
	if len(u.Tang) > 0 {
		need["/usr/bin/clevis-decrypt-tang"] = "clevis"
	}
	if u.TPM2 != nil {
		need["/usr/bin/clevis-decrypt-tpm2"] = "clevis-tpm2"
	}
	for p, pkg := range need {
		if _, err := os.Stat(m.host(p)); err != nil {
			return refuse("the layout binds the root with Clevis, but the running system lacks %s (package %s); install it first", p, pkg)
		}
	}
	base := unlock.Options{Volume: m.RootMapping, Run: m.o.Run, HTTP: m.o.HTTP, SysRoot: m.o.Root, ReadHeader: m.o.ReadHeader, DryRun: true}
	var opts []unlock.Options
	for _, t := range u.Tang {
		o := base
		o.Method, o.URL, o.Thumbprint = unlock.Tang, t.URL, t.Thumbprint
		opts = append(opts, o)
	}
	if t := u.TPM2; t != nil {
		o := base
		o.Method, o.PCRs, o.PCRBank = unlock.TPM2, t.PCRs, t.PCRBank
		opts = append(opts, o)
	}
	for i, o := range opts {
		res, err := unlock.Add(context.Background(), o)
		if err != nil {
			return refuse("%v", err)
		}
		// apply binds the root from the same layout: a binding that is
		// there already is kept, not made a second time.
		if h, err := o.ReadHeader(res.Device); err == nil && len(clevis.Bound(h, o.Pin())) > 0 {
			continue
		}
		e := res.Steps[0]
		e.ID = fmt.Sprintf("%s-%d", e.ID, i)
		o.DryRun = false
		m.binds = append(m.binds, &bindStep{m: m, o: o, dev: res.Device, e: e})
	}
	// Only a binding still to make needs the passphrase.
	if len(m.binds) > 0 && len(m.o.Passphrase) == 0 {
		return refuse("the layout binds the root with Clevis (keys.unlock), which needs the root's passphrase: give --passphrase-file")
	}
	return nil
}
