package migrate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/doors/fs"
	"github.com/cryptshift/cryptshift/internal/doors/qemuimg"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/runner/engine"
	"github.com/cryptshift/cryptshift/libvirt"
	"github.com/cryptshift/cryptshift/lvm"
)

// Step is one action of a migration: its plan entry (what --dry-run prints)
// and the code that carries it out. Run must be safe to repeat.
type Step struct {
	plan.Step
	Disk string // the disk the step is about; "" for the whole domain
	// State is reached by the step's disks (Disk, or every disk in Disks)
	// when it is done.
	State string
	Disks []string
	Run   func(ctx context.Context) error
}

func (s *Step) stateDisks() []string {
	if s.State == "" {
		return nil
	}
	if s.Disk != "" {
		return []string{s.Disk}
	}
	return s.Disks
}

// buildSteps turns a header into the ordered steps. It is pure apart from
// the closures: printing the steps runs nothing, and resume rebuilds exactly
// the same list from the journal's header.
func buildSteps(rt *runtime) []*Step {
	h, t := rt.h, rt.t
	var steps []*Step
	all := diskNames(h)
	if h.Mode == ModeOffline && h.Shutdown && h.WasRunning {
		steps = append(steps, rt.shutdownStep())
	}
	for i := range h.Disks {
		steps = append(steps, t.CreateSteps(h, &h.Disks[i])...)
	}
	steps = append(steps, t.BootSteps(h)...)
	switch {
	case h.Mode == ModeOffline:
		for i := range h.Disks {
			steps = append(steps, rt.dataSteps(&h.Disks[i])...)
		}
		steps = append(steps, rt.switchOfflineStep(all))
		if h.Shutdown && h.WasRunning {
			steps = append(steps, rt.startStep())
		}
	case h.Engine == EngineSnapshot:
		for i := range h.Disks {
			d := &h.Disks[i]
			steps = append(steps, t.OverlayStep(h, d, d.Target+".overlay", d.OverlayPath, d.Top()))
		}
		steps = append(steps, rt.snapshotStep(all))
		for i := range h.Disks {
			steps = append(steps, rt.dataSteps(&h.Disks[i])...)
		}
		for i := range h.Disks {
			steps = append(steps, rt.liveSwitchStep(&h.Disks[i]))
		}
	case h.Engine == EngineMirror:
		for i := range h.Disks {
			steps = append(steps, rt.mirrorStep(&h.Disks[i]))
		}
		steps = append(steps, rt.mirrorSwitchStep(all))
	}
	if h.RetireSource {
		for i := range h.Disks {
			steps = append(steps, rt.retireStep(&h.Disks[i]))
		}
	}
	return steps
}

// dataSteps copy a disk onto its target and verify the copy: the target's
// own steps when it has them (vg: writes its mappings itself), else
// qemu-img convert and compare.
func (rt *runtime) dataSteps(d *Disk) []*Step {
	if t, ok := rt.t.(interface{ DataSteps(d *Disk) []*Step }); ok {
		return t.DataSteps(d)
	}
	return []*Step{rt.copyStep(d), rt.verifyStep(d)}
}

func diskNames(h *Header) []string {
	var out []string
	for _, d := range h.Disks {
		out = append(out, d.Target)
	}
	return out
}

func (d *Disk) sourceImage() qemuimg.Image {
	// qemu-img follows the backing files recorded in the image headers: the
	// chain discovery read them, and nothing rewrites a source header.
	return qemuimg.Image{Path: d.Top().Path, Format: d.Top().Format}
}

func (rt *runtime) shutdownStep() *Step {
	h := rt.h
	op := libvirt.ShutdownDomain{Domain: h.Domain, Wait: rt.shutdownTimeout, ThenDestroy: h.ForceOff}
	s := &Step{Step: plan.Step{ID: "domain.shutdown", Action: "shutdown", Target: "domain " + h.Domain,
		Description: fmt.Sprintf("shut domain %s down gracefully (ACPI or guest agent), waiting up to %s", h.Domain, op.Wait),
		Command:     op.Argv(), Undo: libvirt.StartDomain{Domain: h.Domain}.Argv()}}
	s.Run = func(ctx context.Context) error {
		st, err := rt.hv.DomainState(op.Domain)
		if err != nil {
			return err
		}
		if st == libvirt.ShutOff {
			return nil
		}
		rt.event(map[string]any{"event": "shutdown"})
		if err := rt.hv.ShutdownDomain(op.Domain); err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, op.Wait)
		defer cancel()
		err = rt.hv.WaitState(wctx, op.Domain, libvirt.ShutOff, 250*time.Millisecond)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !op.ThenDestroy {
			return fmt.Errorf("cannot shut domain %s down: the guest did not power off within %s; it may still be shutting down. Shut it down yourself, give it longer with --shutdown-timeout, or pass --force-off to power it off (like pulling the plug)", h.Domain, rt.shutdownTimeout)
		}
		rt.printf("domain %s did not shut down within %s: powering it off (--force-off)\n", h.Domain, rt.shutdownTimeout)
		return rt.hv.DestroyDomain(op.Domain)
	}
	return s
}

func (rt *runtime) startStep() *Step {
	h := rt.h
	op := libvirt.StartDomain{Domain: h.Domain}
	s := &Step{Step: plan.Step{ID: "domain.start", Action: "start", Target: "domain " + h.Domain,
		Description: fmt.Sprintf("start domain %s again, now on its encrypted disks", h.Domain),
		Command:     op.Argv()}}
	s.Run = func(ctx context.Context) error {
		st, err := rt.hv.DomainState(op.Domain)
		if err != nil {
			return err
		}
		if st != libvirt.ShutOff {
			return nil
		}
		return rt.hv.StartDomain(op.Domain)
	}
	return s
}

// sparse reports whether a disk's copy writes only the data: an encrypted
// qcow2 target without a backing file reads zeros wherever nothing was
// written, so holes and zero blocks need not be written (a raw LUKS target
// decrypts unwritten blocks to noise: every block must be written).
func (d *Disk) sparse() bool { return d.targetImageFormat() == qemuimg.QCOW2 }

// convertCmd is the copy of a disk into its (pool:) target.
func (d *Disk) convertCmd(dst qemuimg.Image) execx.Cmd {
	if d.sparse() {
		return qemuimg.ConvertSparseCmd(d.sourceImage(), dst)
	}
	return qemuimg.ConvertCmd(d.sourceImage(), dst)
}

// targetImage is how the copy and the verification open a disk's target:
// the target's image with its key, with O_DIRECT where the pool's
// filesystem takes it (Disk.TargetDirect).
func (rt *runtime) targetImage(ctx context.Context, d *Disk) (qemuimg.Image, error) {
	im, err := rt.t.Image(ctx, d)
	im.Direct = d.TargetDirect
	return im, err
}

func (rt *runtime) copyStep(d *Disk) *Step {
	dst := qemuimg.Image{Path: d.TargetPath, Format: d.targetImageFormat(), Secret: placeholderKey, Direct: d.TargetDirect}
	what := "the disk"
	if rt.h.Mode == ModeLive {
		what = "the frozen base (the guest writes to the encrypted overlay meanwhile)"
	}
	how := "writing every block"
	if d.sparse() {
		how = "flattening the chain and writing only its data (holes and zero blocks stay unallocated)"
	}
	if d.TargetDirect {
		how += "; the target is written with O_DIRECT (the host's page cache keeps its own data)"
	}
	s := &Step{Step: plan.Step{ID: d.Target + ".copy", Action: "copy", Target: d.TargetPath,
		Description: fmt.Sprintf("copy %s of %s (%s) into the encrypted target, %s", what, d.Target, chainString(d.Chain), how),
		Command:     d.convertCmd(dst).Argv(),
		Secrets:     []plan.SecretRef{{FD: 3, Secret: d.Target + "-key"}}},
		Disk: d.Target, State: StateCopied}
	s.Run = func(ctx context.Context) error {
		dst, err := rt.targetImage(ctx, d)
		if err != nil {
			return err
		}
		stop := rt.watchCopy(ctx, d)
		err = rt.whenUnlocked(ctx, d.TargetPath, func() error {
			if d.sparse() {
				return rt.img.ConvertSparse(ctx, d.sourceImage(), dst)
			}
			return rt.img.Convert(ctx, d.sourceImage(), dst)
		})
		stop(err)
		return err
	}
	return s
}

// The verification is qemu-img compare without -s (strict): it compares
// what the guest reads, and treats an unallocated area of one image as
// zeros of the other. Strict mode would also fail on allocation
// differences that the guest cannot see and that are the point of the
// copy: the source's chain allocates in several layers (and allocates the
// zero clusters it was told to write), the flattened qcow2 target
// allocates only the data. Where allocation does matter — an unallocated
// cluster of a qcow2 target reads zeros only because the target has no
// backing file — verify checks that the target has none.
func (rt *runtime) verifyStep(d *Disk) *Step {
	dst := qemuimg.Image{Path: d.TargetPath, Format: d.targetImageFormat(), Secret: placeholderKey, Direct: d.TargetDirect}
	desc := fmt.Sprintf("compare the source of %s with the decrypted target, byte for byte", d.Target)
	if d.sparse() {
		desc = fmt.Sprintf("check that the target of %s has no backing file (its unallocated clusters read zeros) and compare the source with the decrypted target, byte for byte as the guest reads them (qemu-img compare, not strict: unallocated = zeros)", d.Target)
	}
	if d.TargetDirect {
		desc += "; the target is read from the disk with O_DIRECT"
	}
	s := &Step{Step: plan.Step{ID: d.Target + ".verify", Action: "verify", Target: d.TargetPath,
		Description: desc,
		Command:     qemuimg.CompareCmd(d.sourceImage(), dst, false).Argv(),
		Secrets:     []plan.SecretRef{{FD: 3, Secret: d.Target + "-key"}}},
		Disk: d.Target, State: StateVerified}
	s.Run = func(ctx context.Context) error {
		dst, err := rt.targetImage(ctx, d)
		if err != nil {
			return err
		}
		if d.sparse() {
			if err := rt.noBacking(ctx, d); err != nil {
				return err
			}
		}
		// The compare must decrypt what is on the disk: write back what the
		// copy left dirty and drop the target's cached pages (only the
		// target's: the source stays cached, and so does the host's own
		// data). With O_DIRECT the compare reads the disk anyway and this
		// finds nothing to do.
		if err := syncAndDrop(d.TargetPath); err != nil {
			return err
		}
		rt.prog.Start("verify "+d.Target, 0)
		err = rt.whenUnlocked(ctx, d.TargetPath, func() error { return rt.img.Compare(ctx, d.sourceImage(), dst, false) })
		rt.prog.Done(err)
		if err == nil && d.sparse() {
			rt.note(fmt.Sprintf("%s: the encrypted qcow2 target %s allocates %s for a source chain that allocates %s (%s virtual)",
				d.Target, d.TargetPath, human(allocated(d.TargetPath)), human(d.Allocated), human(d.VirtualSize)))
		}
		return err
	}
	return s
}

// noBacking checks that a qcow2 target is one image: no backing file that
// its unallocated clusters would show through.
func (rt *runtime) noBacking(ctx context.Context, d *Disk) error {
	chain, err := rt.img.InfoChain(ctx, d.TargetPath, qemuimg.QCOW2)
	if err != nil {
		return err
	}
	if len(chain) != 1 || chain[0].BackingFilename != "" || !chain[0].Encrypted {
		return fmt.Errorf("cannot verify %s: the target must be one encrypted qcow2 image without a backing file, qemu-img reports %+v; roll back with cryptshift rollback", d.TargetPath, chain)
	}
	return nil
}

// whenUnlocked runs op, and runs it again while qemu's image locking says
// another process holds the image: after a kill -9 of cryptshift, the
// qemu-img it started may still be writing the target (it is not killed
// with its parent) and finishes within a copy's time.
func (rt *runtime) whenUnlocked(ctx context.Context, path string, op func() error) error {
	deadline := time.Now().Add(rt.lockWait)
	said := false
	for {
		err := op()
		if err == nil || !strings.Contains(err.Error(), "Failed to get") || !strings.Contains(err.Error(), "lock") || time.Now().After(deadline) {
			return err
		}
		if !said {
			rt.printf("waiting for another process (an interrupted cryptshift's qemu-img?) to release %s\n", path)
			said = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// guestDisk returns the persistent disk element for a disk on its target:
// the original element (bus, address, boot order, serial stay) with the
// source, format and backing chain replaced.
func (rt *runtime) guestDisk(d *Disk) (*libvirtxml.DomainDisk, error) {
	var x libvirtxml.DomainDisk
	if err := x.Unmarshal(d.OrigXML); err != nil {
		return nil, fmt.Errorf("cannot parse the saved definition of disk %s: %w", d.Target, err)
	}
	format, src := rt.t.GuestDisk(d)
	if x.Driver == nil {
		x.Driver = &libvirtxml.DomainDiskDriver{Name: "qemu"}
	}
	x.Driver.Type = format
	x.Source = src
	x.BackingStore = nil
	x.Encryption = nil // the legacy placement; the new one is inside <source>
	return &x, nil
}

// defineDisks rewrites the persistent definition so that each named disk
// uses the element elem returns for it. It reads the definition with its
// secure parts (graphics passwords) only to define it back at once.
func (rt *runtime) defineDisks(targets []string, elem func(d *Disk) (*libvirtxml.DomainDisk, error)) error {
	h := rt.h
	if !h.Persistent {
		return nil
	}
	dom, err := rt.hv.DomainXML(h.Domain, libvirt.XMLFlags{Inactive: true, Secure: true})
	if err != nil {
		return err
	}
	for _, name := range targets {
		d := rt.disk(name)
		x := libvirt.FindDisk(dom, name)
		if x == nil {
			return fmt.Errorf("cannot switch disk %s: it is no longer in the definition of domain %s", name, h.Domain)
		}
		nx, err := elem(d)
		if err != nil {
			return err
		}
		*x = *nx
	}
	return rt.hv.DefineDomain(dom)
}

func (rt *runtime) disk(name string) *Disk {
	for i := range rt.h.Disks {
		if rt.h.Disks[i].Target == name {
			return &rt.h.Disks[i]
		}
	}
	return nil
}

func (rt *runtime) switchOfflineStep(disks []string) *Step {
	h := rt.h
	op := libvirt.DefineDisks{Domain: h.Domain}
	for _, n := range disks {
		op.Disks = append(op.Disks, libvirt.DiskSource{Disk: n, Source: rt.t.Describe(rt.disk(n))})
	}
	s := &Step{Step: plan.Step{ID: "domain.switch", Action: "switch", Target: "domain " + h.Domain,
		Description: fmt.Sprintf("define domain %s with its disks on the encrypted targets; the old definition is saved in %s", h.Domain, h.OrigXMLPath),
		Command:     op.Argv(), Undo: libvirt.DefineFile{File: h.OrigXMLPath}.Argv()},
		State: StateSwitched, Disks: disks}
	s.Run = func(ctx context.Context) error {
		if st, err := rt.hv.DomainState(h.Domain); err != nil {
			return err
		} else if st != libvirt.ShutOff {
			return fmt.Errorf("cannot switch domain %s offline: it is %s again; shut it down and rerun with --resume", h.Domain, st)
		}
		return rt.defineDisks(disks, rt.guestDisk)
	}
	return s
}

func (rt *runtime) retireStep(d *Disk) *Step {
	var files, lvs []string
	var cmd []string
	for _, l := range d.Chain {
		files = append(files, l.Path)
		if l.LV != "" {
			lvs = append(lvs, l.LV)
		}
	}
	desc := fmt.Sprintf("overwrite the plaintext source of %s with zeros and remove it (image files used by no other domain only; see the note on SSDs)", d.Target)
	if len(lvs) == 0 {
		cmd = append([]string{"cryptshift:overwrite-zeros-and-remove"}, files...)
	} else {
		desc = fmt.Sprintf("retire the plaintext source of %s: discard and remove the logical volumes %s, overwrite with zeros and remove image files (used by no other domain only; see the notes on SSDs)", d.Target, strings.Join(lvs, ", "))
		for _, l := range d.Chain {
			switch {
			case l.LV != "":
				vg, name, _ := strings.Cut(l.LV, "/")
				cmd = append(cmd, fs.Discard{Device: l.Path}.Argv()...)
				cmd = append(cmd, lvm.Argv(lvm.LVRemove{VG: vg, Name: name})...)
			case l.Type == "file":
				cmd = append(cmd, "cryptshift:overwrite-zeros-and-remove", l.Path)
			}
		}
	}
	s := &Step{Step: plan.Step{ID: d.Target + ".retire", Action: "retire-source", Target: strings.Join(files, " "),
		Description: desc, Command: cmd,
		Destructive: true, Destroys: "the plaintext source images of " + d.Target + " (" + chainString(d.Chain) + ")"},
		Disk: d.Target, State: StateRetired}
	s.Run = func(ctx context.Context) error { return rt.retire(ctx, d) }
	return s
}

func chainString(chain []Layer) string {
	var parts []string
	for _, l := range chain {
		parts = append(parts, l.Path+" ("+l.Format+")")
	}
	return strings.Join(parts, " ← ")
}

// watchCopy shows a copy's progress by watching the target grow: qemu-img
// writes every block of a fresh LUKS image, so its allocation tracks the
// bytes done. It returns a function that ends the display.
func (rt *runtime) watchCopy(ctx context.Context, d *Disk) func(error) {
	total := d.VirtualSize
	if d.sparse() {
		total = max(d.Allocated, 1) // the target grows with the data
	}
	rt.prog.Start("copy "+d.Target, total)
	base := allocated(d.TargetPath)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				n := allocated(d.TargetPath) - base
				rt.prog.Update(min(max(n, 0), total))
			}
		}
	}()
	if engine.FaultsEnabled() {
		go rt.failWhileChildRuns("copy:"+d.Target, done)
	}
	return func(err error) {
		close(done)
		<-finished
		if err == nil {
			rt.prog.Update(total)
		}
		rt.prog.Done(err)
	}
}

func allocated(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return sys.Blocks * 512 // st_blocks counts 512-byte units (stat(2))
	}
	return st.Size()
}

// failWhileChildRuns fires a failpoint as soon as this process has a
// qemu-img child: the crash tests kill cryptshift while its copy runs,
// which a timer could miss on a small, fast copy.
func (rt *runtime) failWhileChildRuns(point string, done <-chan struct{}) {
	me := strconv.Itoa(os.Getpid())
	for {
		select {
		case <-done:
			return
		case <-time.After(2 * time.Millisecond):
		}
		stats, _ := filepath.Glob("/proc/[0-9]*/stat")
		for _, f := range stats {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			// pid (comm) state ppid ...
			s := string(b)
			i := strings.LastIndexByte(s, ')')
			if i < 0 || !strings.Contains(s[:i], "(qemu-img") {
				continue
			}
			if fields := strings.Fields(s[i+1:]); len(fields) > 1 && fields[1] == me {
				engine.Fault(point)
			}
		}
	}
}
