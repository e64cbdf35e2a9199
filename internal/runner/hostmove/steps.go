package hostmove

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/cryptshift/cryptshift/internal/doors/chroot"
	"github.com/cryptshift/cryptshift/internal/doors/clevis"
	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/doors/rsync"
	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"github.com/cryptshift/cryptshift/internal/hostview/sysconf"
	"github.com/cryptshift/cryptshift/internal/model/layout"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/runner/engine"
	"github.com/cryptshift/cryptshift/internal/runner/unlock"
)

// Actions of host-move steps (the plan's ACTION column).
const (
	ActCopy          = "copy"
	ActStopServices  = "stopServices"
	ActCrypttab      = "crypttabInitramfs"
	ActInitramfsConf = "initramfsConfig"
	ActDropbear      = "dropbearConfig"
	ActGrubConf      = "grubConfig"
	ActChroot        = "chroot"
	ActCheck         = "checkInitramfs"
)

// excludes are what no pass copies, relative to the root filesystem:
// contents of pseudo and temporary mount points (their directories stay),
// the target itself, the running services' private temporary
// directories, and what apply wrote for the new system (its fstab,
// crypttab, key files, header backups) or what cryptshift keeps (journals),
// which --delete must not remove either.
func (m *Move) excludes(fs Filesystem) []string {
	var ex []string
	rel := func(p string) (string, bool) {
		if !under(p, fs.Mount) {
			return "", false
		}
		r := strings.TrimPrefix(p, strings.TrimSuffix(fs.Mount, "/"))
		if r == "" {
			r = "/"
		}
		return r, true
	}
	add := func(p, suffix string) {
		if r, ok := rel(p); ok && r != "/" && !slices.Contains(ex, r+suffix) {
			ex = append(ex, r+suffix)
		}
	}
	add(m.o.Target, "")
	for _, p := range []string{"/proc", "/sys", "/dev", "/run", "/tmp", "/mnt", "/media"} {
		add(p, "/*")
	}
	for _, t := range m.o.Layout.Tmp {
		if t.Type == layout.TmpTmpfs {
			add(t.Path, "/*")
		}
	}
	add("/lost+found", "")
	add("/var/tmp", "/systemd-private-*")
	add("/etc/fstab", "")
	add("/etc/crypttab", "")
	add(m.o.Layout.Keys.KeyFileDir, "")
	if d := m.o.Layout.Keys.HeaderBackupDir; d != "" {
		add(d, "")
	}
	add("/var/lib/cryptshift", "")
	return ex
}

func (m *Move) build() {
	copies := func(final bool) {
		for _, fs := range m.FS {
			c := rsync.Copy{Src: fs.Mount, Dst: m.onTarget(fs.Mount), Excludes: m.excludes(fs), Delete: final, NoOwners: fs.FSType == "vfat"}
			pass, what := "live", "first pass while the services run"
			if final {
				pass, what = "final", "final pass with the services stopped; deletes what vanished from the source"
			}
			m.add(&copyStep{m: m, c: c, e: plan.Step{
				ID: "copy-" + pass + ":" + fs.Mount, Action: ActCopy, Target: fs.Mount,
				Description: fmt.Sprintf("copy %s (%s on %s) onto %s (%s): %s; the source is only read",
					fs.Mount, fs.FSType, fs.Source, fs.Onto, fs.OntoSource, what),
				Command: c.Cmd().Argv(),
			}})
		}
	}
	copies(false)
	if len(m.o.StopServices) > 0 {
		c := execx.Cmd{Tool: "systemctl", Args: append([]string{"stop", "--"}, m.o.StopServices...)}
		m.add(&cmdStep{m: m, cmds: []execx.Cmd{c}, e: plan.Step{
			ID: "stop-services", Action: ActStopServices, Target: strings.Join(m.o.StopServices, " "),
			Description: "stop the services that write data, so the final pass catches everything (they stay stopped: reboot into the new disks next)",
			Command:     c.Argv(),
		}})
	}
	copies(true)

	m.add(&crypttabStep{m: m, e: plan.Step{
		ID: "crypttab-root", Action: ActCrypttab, Target: m.onTarget("/etc/crypttab"),
		Description: fmt.Sprintf("mark the root's crypttab entry %s with the initramfs option, so cryptsetup-initramfs always unlocks it in the initramfs (the other volumes' key files are on the root and are read after it is open)", m.RootMapping),
	}})
	for _, b := range m.binds {
		m.add(b)
	}
	m.addFiles("initramfs-config", ActInitramfsConf, "set up initramfs-tools for the encrypted root: "+m.initramfsWhy(), m.initramfsFiles())
	if s := m.ssh(); s != nil {
		m.addFiles("dropbear-config", ActDropbear, "unlock over SSH: dropbear in the initramfs with the layout's authorized keys (its own host keys, made when dropbear-initramfs was installed), no passwords, no forwarding; unlock with cryptroot-unlock", m.dropbearFiles(s))
	}
	m.addFiles("grub-config", ActGrubConf, "kernel command line for the new system: "+strings.Join(m.cmdline(), " "), m.grubFiles())

	inChroot := func(id, what string, op chroot.Op) {
		c := chroot.Cmd(op)
		m.add(&cmdStep{m: m, chroot: true, cmds: []execx.Cmd{c}, e: plan.Step{
			ID: id, Action: ActChroot, Target: m.o.Target, Description: what + " (in a chroot of the new system, with /dev, /proc, /sys and /run bound)",
			Command: c.Argv(),
		}})
	}
	inChroot("update-initramfs", "regenerate the new system's initramfs", chroot.UpdateInitramfs{Root: m.o.Target})
	if m.esp != "" {
		inChroot("grub-install-efi", fmt.Sprintf("install GRUB for UEFI on the layout's ESP (%s) at the firmware's fallback path EFI/BOOT/BOOTX64.EFI, which boots with no NVRAM entry (add one with efibootmgr if the firmware wants it)", m.esp),
			chroot.GrubInstallEFI{Root: m.o.Target, ESP: m.esp})
	}
	for i, d := range m.biosDisks {
		inChroot(fmt.Sprintf("grub-install-bios-%d", i), "install GRUB for BIOS into the bios-boot partition of "+d, chroot.GrubInstallBIOS{Root: m.o.Target, Disk: d})
	}
	inChroot("update-grub", "write the new system's grub.cfg (root=/dev/mapper/"+m.RootMapping+", /boot found by its filesystem UUID)", chroot.UpdateGrub{Root: m.o.Target})
	m.add(&checkStep{m: m, e: plan.Step{
		ID: "check-initramfs", Action: ActCheck, Target: m.onTarget("/boot"),
		Description: "check every initramfs of the new system: cryptsetup, dm-crypt, the root's crypttab entry " + m.RootMapping + " and the unlock method(s) (" + strings.Join(m.unlockMethods(), ", ") + ") are in it, and grub.cfg boots from /dev/mapper/" + m.RootMapping,
	}})
}

func (m *Move) add(s engine.Step) { m.steps = append(m.steps, s) }

// unlockMethods names how the root opens at boot.
func (m *Move) unlockMethods() []string {
	out := []string{"passphrase on the console"}
	if m.ssh() != nil {
		out = append(out, "passphrase over SSH (dropbear)")
	}
	if u := m.unlock(); u != nil {
		for _, t := range u.Tang {
			out = append(out, "tang "+t.URL)
		}
		if u.TPM2 != nil {
			out = append(out, "tpm2")
		}
	}
	return out
}

// bindStep binds a Clevis pin to a new keyslot of the root volume.
type bindStep struct {
	m   *Move
	o   unlock.Options
	dev string
	e   plan.Step
}

func (s *bindStep) Entry() plan.Step { return s.e }

func (s *bindStep) Do(ctx context.Context) error {
	o := s.o
	o.Passphrase = s.m.o.Passphrase
	_, err := unlock.Add(ctx, o)
	return err
}

// Done: the header already carries the binding (a crash after clevis
// bound it must not bind a second keyslot).
func (s *bindStep) Done(context.Context) (bool, error) {
	h, err := s.o.ReadHeader(s.dev)
	if err != nil {
		return false, nil
	}
	return len(clevis.Bound(h, s.o.Pin())) > 0, nil
}

func (m *Move) initramfsWhy() string {
	why := "RESUME=none (swap has a random key and can never be resumed from)"
	if m.o.Layout.Hibernation {
		why = "RESUME from the layout's hibernation swap"
	}
	if m.o.InitramfsModules == ModulesDep {
		why += "; MODULES=dep (only this machine's drivers: the initramfs will not boot other hardware)"
	}
	if u := m.unlock(); u != nil && len(u.NetworkModules) > 0 {
		why += "; network driver(s) " + strings.Join(u.NetworkModules, ", ") + " for the unlock"
	}
	return why
}

// file is one file a step writes into the new system.
type file struct {
	Path string // in the new system
	Data string
	Mode os.FileMode
	// Append adds the lines of Data that the file lacks instead of
	// replacing it (/etc/initramfs-tools/modules: the admin's own lines
	// stay).
	Append bool
}

func (m *Move) initramfsFiles() []file {
	var conf strings.Builder
	conf.WriteString("# written by cryptshift migrate-host\n")
	if m.o.Layout.Hibernation {
		conf.WriteString("RESUME=" + m.resumeSpec() + "\n")
	} else {
		conf.WriteString("RESUME=none\n")
	}
	if m.o.InitramfsModules == ModulesDep {
		conf.WriteString("MODULES=dep\n")
	}
	files := []file{{Path: "/etc/initramfs-tools/conf.d/cryptshift", Data: conf.String(), Mode: 0o644}}
	if u := m.unlock(); u != nil && len(u.NetworkModules) > 0 {
		files = append(files, file{Path: "/etc/initramfs-tools/modules", Data: strings.Join(u.NetworkModules, "\n") + "\n", Mode: 0o644, Append: true})
	}
	return files
}

// resumeSpec is the swap named in the new fstab (the hibernation swap,
// which apply sets up with a LUKS2 key, not a random one).
func (m *Move) resumeSpec() string {
	b, err := os.ReadFile(m.host(m.onTarget("/etc/fstab")))
	if err == nil {
		if es, err := sysconf.ParseFstab(bytes.NewReader(b)); err == nil {
			for _, e := range es {
				if e.VFSType == "swap" {
					return e.Spec
				}
			}
		}
	}
	return "none"
}

func (m *Move) dropbearFiles(s *layout.SSHUnlock) []file {
	port := s.Port
	if port == 0 {
		port = layout.SSHPort
	}
	var keys strings.Builder
	for _, k := range s.AuthorizedKeys {
		keys.WriteString(strings.TrimSpace(k) + "\n")
	}
	// -I 600: drop an idle session; -j -k: no port forwarding; -s: no
	// password logins (dropbear(8)).
	conf := fmt.Sprintf("# written by cryptshift migrate-host\nDROPBEAR_OPTIONS=\"-I 600 -j -k -p %d -s\"\n", port)
	return []file{
		{Path: "/etc/dropbear/initramfs/authorized_keys", Data: keys.String(), Mode: 0o600},
		{Path: "/etc/dropbear/initramfs/dropbear.conf", Data: conf, Mode: 0o644},
	}
}

// cmdline is what the new system's kernel command line gets.
func (m *Move) cmdline() []string {
	var out []string
	if u := m.unlock(); u != nil && (u.SSH != nil || len(u.Tang) > 0) {
		ip := u.IP
		if ip == "" {
			ip = "dhcp"
		}
		out = append(out, "ip="+ip)
	}
	return append(out, m.o.KernelCmdline...)
}

func (m *Move) grubFiles() []file {
	var b strings.Builder
	b.WriteString("# written by cryptshift migrate-host (sourced by grub-mkconfig after /etc/default/grub)\n")
	b.WriteString("GRUB_TIMEOUT=${GRUB_TIMEOUT:-5}\n")
	serial := false
	for _, p := range m.o.KernelCmdline {
		if strings.HasPrefix(p, "console=ttyS") {
			serial = true
		}
	}
	if serial {
		b.WriteString("GRUB_TERMINAL=${GRUB_TERMINAL:-console}\n")
	}
	if c := m.cmdline(); len(c) > 0 {
		b.WriteString("GRUB_CMDLINE_LINUX=\"${GRUB_CMDLINE_LINUX:+$GRUB_CMDLINE_LINUX }" + strings.Join(c, " ") + "\"\n")
	}
	return []file{{Path: "/etc/default/grub.d/cryptshift.cfg", Data: b.String(), Mode: 0o644}}
}

func (m *Move) addFiles(id, action, what string, files []file) {
	var in strings.Builder
	var paths []string
	for _, f := range files {
		paths = append(paths, m.onTarget(f.Path))
		verb := "write"
		if f.Append {
			verb = "add the missing lines to"
		}
		fmt.Fprintf(&in, "# %s %s (mode %04o)\n%s", verb, m.onTarget(f.Path), f.Mode, f.Data)
	}
	m.add(&fileStep{m: m, files: files, e: plan.Step{ID: id, Action: action, Target: strings.Join(paths, " "), Description: what, Input: in.String()}})
}

// copyStep is one rsync pass over one filesystem.
type copyStep struct {
	m *Move
	c rsync.Copy
	e plan.Step
}

func (s *copyStep) Entry() plan.Step                   { return s.e }
func (s *copyStep) Do(ctx context.Context) error       { return s.c.Run(ctx, s.m.o.Run) }
func (s *copyStep) Done(context.Context) (bool, error) { return false, nil } // rsync again is cheap and exact
func (s *copyStep) Interruptible() bool                { return true }       // the next run continues from what is there

// cmdStep runs commands, in a chroot of the new system when asked.
type cmdStep struct {
	m      *Move
	cmds   []execx.Cmd
	chroot bool
	e      plan.Step
}

func (s *cmdStep) Entry() plan.Step                   { return s.e }
func (s *cmdStep) Done(context.Context) (bool, error) { return false, nil }

func (s *cmdStep) Do(ctx context.Context) (err error) {
	if s.chroot {
		unbind, err := s.m.bind(ctx)
		if err != nil {
			return err
		}
		defer func() {
			if uerr := unbind(); err == nil {
				err = uerr
			}
		}()
	}
	for _, c := range s.cmds {
		if _, err := s.m.o.Run.Run(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// bind mounts the running system's /dev, /dev/pts, /proc, /sys and /run
// into the target for a chroot (udev's data in /run lets grub-probe see
// the LVM and dm-crypt stack), skipping what a crashed run left bound, and
// returns how to undo it.
func (m *Move) bind(ctx context.Context) (func() error, error) {
	mounted := map[string]bool{}
	if f, err := os.Open(m.host("/proc/self/mountinfo")); err == nil {
		ms, _ := blockstack.ParseMountInfo(f)
		f.Close()
		for _, mt := range ms {
			mounted[mt.MountPoint] = true
		}
	}
	var done []string
	unbind := func() error {
		var first error
		for i := len(done) - 1; i >= 0; i-- {
			if _, err := m.o.Run.Run(ctx, execx.Cmd{Tool: "umount", Args: []string{done[i]}}); err != nil && first == nil {
				first = err
			}
		}
		return first
	}
	for _, d := range []string{"/dev", "/dev/pts", "/proc", "/sys", "/run"} {
		at := m.onTarget(d)
		if mounted[at] {
			continue
		}
		if err := os.MkdirAll(m.host(at), 0o755); err != nil {
			unbind()
			return nil, fmt.Errorf("cannot prepare the chroot: %w", err)
		}
		if _, err := m.o.Run.Run(ctx, execx.Cmd{Tool: "mount", Args: []string{"--bind", d, at}}); err != nil {
			unbind()
			return nil, err
		}
		done = append(done, at)
	}
	return unbind, nil
}

// fileStep writes configuration files into the new system.
type fileStep struct {
	m     *Move
	files []file
	e     plan.Step
}

func (s *fileStep) Entry() plan.Step { return s.e }

func (s *fileStep) want(f file) ([]byte, error) {
	if !f.Append {
		return []byte(f.Data), nil
	}
	old, err := os.ReadFile(s.m.host(s.m.onTarget(f.Path)))
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	have := map[string]bool{}
	for _, l := range strings.Split(string(old), "\n") {
		have[strings.TrimSpace(l)] = true
	}
	out := old
	if len(out) > 0 && !bytes.HasSuffix(out, []byte("\n")) {
		out = append(out, '\n')
	}
	for _, l := range strings.Split(strings.TrimSpace(f.Data), "\n") {
		if !have[l] {
			out = append(out, l+"\n"...)
		}
	}
	return out, nil
}

func (s *fileStep) Do(context.Context) error {
	for _, f := range s.files {
		data, err := s.want(f)
		if err != nil {
			return fmt.Errorf("cannot read %s: %w", s.m.onTarget(f.Path), err)
		}
		p := s.m.host(s.m.onTarget(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("cannot write %s: %w", s.m.onTarget(f.Path), err)
		}
		if err := writeAtomic(p, data, f.Mode); err != nil {
			return fmt.Errorf("cannot write %s: %w", s.m.onTarget(f.Path), err)
		}
	}
	return nil
}

func (s *fileStep) Done(context.Context) (bool, error) {
	for _, f := range s.files {
		want, err := s.want(f)
		if err != nil {
			return false, nil
		}
		have, err := os.ReadFile(s.m.host(s.m.onTarget(f.Path)))
		if err != nil || !bytes.Equal(have, want) {
			return false, nil
		}
	}
	return true, nil
}

func writeAtomic(p string, data []byte, mode os.FileMode) error {
	tmp := p + ".cryptshift-new"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil { // WriteFile's mode is masked by the umask
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// crypttabStep adds the initramfs option to the root's crypttab line.
type crypttabStep struct {
	m *Move
	e plan.Step
}

func (s *crypttabStep) Entry() plan.Step { return s.e }

func (s *crypttabStep) edit() (old, new []byte, err error) {
	p := s.m.host(s.m.onTarget("/etc/crypttab"))
	old, err = os.ReadFile(p)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot read %s: %w", s.m.onTarget("/etc/crypttab"), err)
	}
	lines := strings.Split(string(old), "\n")
	found := false
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) < 3 || f[0] != s.m.RootMapping || strings.HasPrefix(f[0], "#") {
			continue
		}
		found = true
		if len(f) == 3 {
			f = append(f, "luks")
		}
		opts := strings.Split(f[3], ",")
		if !slices.Contains(opts, "initramfs") {
			f[3] += ",initramfs"
		}
		lines[i] = strings.Join(f, " ")
	}
	if !found {
		return nil, nil, fmt.Errorf("cannot find %s in %s", s.m.RootMapping, s.m.onTarget("/etc/crypttab"))
	}
	return old, []byte(strings.Join(lines, "\n")), nil
}

func (s *crypttabStep) Do(context.Context) error {
	_, new, err := s.edit()
	if err != nil {
		return err
	}
	return writeAtomic(s.m.host(s.m.onTarget("/etc/crypttab")), new, 0o644)
}

func (s *crypttabStep) Done(context.Context) (bool, error) {
	old, new, err := s.edit()
	return err == nil && bytes.Equal(old, new), nil
}

// checkStep reads every initramfs of the new system and its grub.cfg.
type checkStep struct {
	m *Move
	e plan.Step
}

func (s *checkStep) Entry() plan.Step                   { return s.e }
func (s *checkStep) Done(context.Context) (bool, error) { return false, nil }

// Required initramfs members, as regular expressions over the listing.
// dropbear's authorized_keys lands in root-RANDOM/.ssh/; tpm_tis is built
// into Debian's kernel, so no module is looked for there.
func (m *Move) requiredMembers() map[string]string {
	req := map[string]string{
		"cryptsetup":           `^usr/sbin/cryptsetup$`,
		"the crypttab":         `^cryptroot/crypttab$`,
		"the dm-crypt module":  `(^|/)dm-crypt\.ko(\.[a-z]+)?$`,
		"the cryptroot script": `^scripts/local-top/cryptroot$`,
	}
	if s := m.ssh(); s != nil {
		req["dropbear"] = `^usr/sbin/dropbear$`
		req["dropbear's authorized_keys"] = `^root-[^/]*/\.ssh/authorized_keys$`
		req["cryptroot-unlock"] = `^usr/bin/cryptroot-unlock$`
	}
	if u := m.unlock(); u != nil {
		for _, mod := range u.NetworkModules {
			req["the "+mod+" module"] = `(^|/)` + regexp.QuoteMeta(mod) + `\.ko(\.[a-z]+)?$`
		}
		if len(u.Tang) > 0 || u.TPM2 != nil {
			req["clevis"] = `^usr/bin/clevis$`
		}
		if len(u.Tang) > 0 {
			req["clevis's tang pin"] = `^usr/bin/clevis-decrypt-tang$`
		}
		if u.TPM2 != nil {
			req["clevis's tpm2 pin"] = `^usr/bin/clevis-decrypt-tpm2$`
		}
	}
	return req
}

func (s *checkStep) Do(context.Context) error {
	m := s.m
	imgs, _ := filepath.Glob(m.host(m.onTarget("/boot/initrd.img-*")))
	if len(imgs) == 0 {
		return fmt.Errorf("cannot check the initramfs: %s has no initrd.img-*", m.onTarget("/boot"))
	}
	for _, img := range imgs {
		f, err := os.Open(img)
		if err != nil {
			return fmt.Errorf("cannot check the initramfs: %w", err)
		}
		members, data, err := sysconf.ReadInitramfs(f, "cryptroot/crypttab")
		f.Close()
		if err != nil {
			return fmt.Errorf("cannot check the initramfs %s: %w", filepath.Base(img), err)
		}
		var missing []string
		for what, re := range m.requiredMembers() {
			rx := regexp.MustCompile(re)
			found := false
			for _, e := range members {
				if rx.MatchString(e.Name) {
					found = true
					break
				}
			}
			if !found {
				missing = append(missing, what)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("the initramfs %s lacks %s; the new system would not unlock its root at boot", filepath.Base(img), strings.Join(sorted(missing), ", "))
		}
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(m.RootMapping) + `\s`).Match(data["cryptroot/crypttab"]) {
			return fmt.Errorf("the initramfs %s does not unlock %s (its cryptroot/crypttab lacks it)", filepath.Base(img), m.RootMapping)
		}
		if n := len(members); n > 0 && m.o.Out != nil {
			fmt.Fprintf(m.o.Out, "checked %s: %d members, unlocks %s by %s\n", filepath.Base(img), n, m.RootMapping, strings.Join(m.unlockMethods(), ", "))
		}
	}
	cfg, err := os.ReadFile(m.host(m.onTarget("/boot/grub/grub.cfg")))
	if err != nil {
		return fmt.Errorf("cannot check GRUB: %w", err)
	}
	if !bytes.Contains(cfg, []byte("root=/dev/mapper/"+m.RootMapping+" ")) && !bytes.Contains(cfg, []byte("root=/dev/mapper/"+m.RootMapping+"\n")) {
		return fmt.Errorf("%s does not boot root=/dev/mapper/%s", m.onTarget("/boot/grub/grub.cfg"), m.RootMapping)
	}
	return nil
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
