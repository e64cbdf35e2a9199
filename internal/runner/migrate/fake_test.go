package migrate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	lv "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/doors/progress"
	"github.com/cryptshift/cryptshift/internal/doors/qemuimg"
	"github.com/cryptshift/cryptshift/libvirt"
)

// fakeHV models the libvirt behaviour migrate relies on: disk chains in the
// live and persistent definitions, external snapshots, block jobs and their
// pivots, secrets, one storage pool. Every mutating call is logged.
type fakeHV struct {
	mu      sync.Mutex
	doms    map[string]*fakeDom
	secrets map[string][]byte // nil value: defined without a value
	pool    libvirt.Pool
	calls   []string
	// failOn makes the named call fail once (e.g. "SnapshotDisks:quiesce").
	failOn map[string]error
	// stuck: the guest ignores shutdown requests.
	stuck bool
	// made: the fixture's fakeImages.made (CreateVolume adds to it).
	made map[string]bool
}

type fakeDom struct {
	uuid       string
	state      libvirt.State
	persistent bool
	live       *libvirtxml.Domain
	inactive   *libvirtxml.Domain
	jobs       map[string]*fakeJob
	agent      string // "", "configured", "connected"
}

type fakeJob struct {
	typ     libvirt.JobType
	dest    *libvirtxml.DomainDisk
	shallow bool
}

func newFakeHV(pool string) *fakeHV {
	return &fakeHV{doms: map[string]*fakeDom{}, secrets: map[string][]byte{}, failOn: map[string]error{},
		pool: libvirt.Pool{Name: "enc", Type: "dir", Path: pool, Active: true, Capacity: 1 << 40, Available: 1 << 40}}
}

func clone(d *libvirtxml.Domain) *libvirtxml.Domain {
	doc, err := d.Marshal()
	if err != nil {
		panic(err)
	}
	var out libvirtxml.Domain
	if err := out.Unmarshal(doc); err != nil {
		panic(err)
	}
	return &out
}

func (f *fakeHV) addDomain(dom *libvirtxml.Domain, state libvirt.State) {
	f.doms[dom.Name] = &fakeDom{uuid: "00000000-0000-4000-8000-000000000001", state: state, persistent: true,
		live: clone(dom), inactive: clone(dom), jobs: map[string]*fakeJob{}}
}

func (f *fakeHV) log(format string, a ...any) { f.calls = append(f.calls, fmt.Sprintf(format, a...)) }

func (f *fakeHV) fail(name string) error {
	if err, ok := f.failOn[name]; ok {
		delete(f.failOn, name)
		return err
	}
	return nil
}

func (f *fakeHV) dom(name string) (*fakeDom, error) {
	d, ok := f.doms[name]
	if !ok {
		return nil, fmt.Errorf("cannot find domain %q: no such domain on qemu:///system; list them with virsh list --all", name)
	}
	return d, nil
}

func (f *fakeHV) Domain(name string) (libvirt.Domain, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := f.dom(name)
	if err != nil {
		return libvirt.Domain{}, err
	}
	return libvirt.Domain{Name: name, UUID: d.uuid, Persistent: d.persistent, State: d.state}, nil
}

func (f *fakeHV) DomainNames() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n := range f.doms {
		out = append(out, n)
	}
	return out, nil
}

func (f *fakeHV) DomainState(name string) (libvirt.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := f.dom(name)
	if err != nil {
		return "", err
	}
	return d.state, nil
}

func (f *fakeHV) DomainXML(name string, fl libvirt.XMLFlags) (*libvirtxml.Domain, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := f.dom(name)
	if err != nil {
		return nil, err
	}
	if fl.Inactive || d.state == libvirt.ShutOff {
		return clone(d.inactive), nil
	}
	out := clone(d.live)
	if d.agent != "" {
		st := ""
		if d.agent == "connected" {
			st = "connected"
		}
		out.Devices.Channels = append(out.Devices.Channels, libvirtxml.DomainChannel{Target: &libvirtxml.DomainChannelTarget{
			VirtIO: &libvirtxml.DomainChannelTargetVirtIO{Name: "org.qemu.guest_agent.0", State: st}}})
	}
	for dev, j := range d.jobs {
		if x := libvirt.FindDisk(out, dev); x != nil {
			x.Mirror = &libvirtxml.DomainDiskMirror{Job: string(j.typ), Ready: "yes"}
		}
	}
	return out, nil
}

func (f *fakeHV) DefineDomain(dom *libvirtxml.Domain) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := f.dom(dom.Name)
	if err != nil {
		return err
	}
	f.log("DefineDomain %s %s", dom.Name, chains(dom))
	d.inactive = clone(dom)
	if d.state == libvirt.ShutOff {
		d.live = clone(dom)
	}
	return nil
}

func chains(dom *libvirtxml.Domain) string {
	var parts []string
	for i := range dom.Devices.Disks {
		x := &dom.Devices.Disks[i]
		enc := ""
		if x.Source != nil && x.Source.Encryption != nil {
			enc = "+luks"
		}
		parts = append(parts, x.Target.Dev+"="+strings.Join(libvirt.Chain(x), "<")+enc)
	}
	return strings.Join(parts, " ")
}

func (f *fakeHV) setState(name string, st libvirt.State, call string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := f.dom(name)
	if err != nil {
		return err
	}
	f.log("%s %s", call, name)
	if err := f.fail(call); err != nil {
		return err
	}
	if call == "ShutdownDomain" && f.stuck {
		return nil
	}
	if st == libvirt.Running && d.state == libvirt.ShutOff {
		d.live = clone(d.inactive)
	}
	d.state = st
	return nil
}

func (f *fakeHV) StartDomain(name string) error {
	return f.setState(name, libvirt.Running, "StartDomain")
}
func (f *fakeHV) ShutdownDomain(name string) error {
	return f.setState(name, libvirt.ShutOff, "ShutdownDomain")
}
func (f *fakeHV) DestroyDomain(name string) error {
	return f.setState(name, libvirt.ShutOff, "DestroyDomain")
}
func (f *fakeHV) SuspendDomain(name string) error {
	return f.setState(name, libvirt.Paused, "SuspendDomain")
}
func (f *fakeHV) ResumeDomain(name string) error {
	return f.setState(name, libvirt.Running, "ResumeDomain")
}

func (f *fakeHV) WaitState(ctx context.Context, name string, want libvirt.State, every time.Duration) error {
	st, err := f.DomainState(name)
	if err != nil {
		return err
	}
	if st != want {
		return fmt.Errorf("still %s", st)
	}
	return nil
}

func (f *fakeHV) SnapshotDisks(name string, snap *libvirtxml.DomainSnapshot, quiesce bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := f.dom(name)
	if err != nil {
		return err
	}
	var parts []string
	for _, sd := range snap.Disks.Disks {
		if sd.Snapshot == "external" {
			parts = append(parts, sd.Name+"="+sd.Source.File.File)
		} else {
			parts = append(parts, sd.Name+"=no")
		}
	}
	f.log("SnapshotDisks %s quiesce=%v %s", name, quiesce, strings.Join(parts, " "))
	if quiesce {
		if err := f.fail("SnapshotDisks:quiesce"); err != nil {
			return err
		}
	}
	for _, sd := range snap.Disks.Disks {
		if sd.Snapshot != "external" {
			continue
		}
		for _, def := range []*libvirtxml.Domain{d.live, d.inactive} {
			x := libvirt.FindDisk(def, sd.Name)
			x.BackingStore = &libvirtxml.DomainDiskBackingStore{Format: &libvirtxml.DomainDiskFormat{Type: x.Driver.Type},
				Source: x.Source, BackingStore: x.BackingStore}
			x.Source = sd.Source
			x.Driver = &libvirtxml.DomainDiskDriver{Name: "qemu", Type: sd.Driver.Type}
		}
	}
	return nil
}

func (f *fakeHV) BlockCopy(name, disk string, dest *libvirtxml.DomainDisk, shallow bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := f.dom(name)
	if err != nil {
		return err
	}
	back := ""
	if dest.BackingStore != nil {
		back = " backing " + libvirt.SourcePath(&libvirtxml.DomainDisk{Source: dest.BackingStore.Source})
	}
	f.log("BlockCopy %s %s -> %s%s shallow=%v", name, disk, libvirt.SourcePath(dest), back, shallow)
	if d.jobs[disk] != nil {
		return errors.New("block job already active")
	}
	d.jobs[disk] = &fakeJob{typ: libvirt.JobCopy, dest: dest, shallow: shallow}
	return nil
}

func (f *fakeHV) BlockCommitActive(name, disk string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := f.dom(name)
	if err != nil {
		return err
	}
	f.log("BlockCommitActive %s %s", name, disk)
	d.jobs[disk] = &fakeJob{typ: libvirt.JobActiveCommit}
	return nil
}

func (f *fakeHV) BlockJob(name, disk string) (libvirt.BlockJob, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := f.dom(name)
	if err != nil {
		return libvirt.BlockJob{}, err
	}
	if j := d.jobs[disk]; j != nil {
		return libvirt.BlockJob{Type: j.typ, Cur: 1, End: 1, Ready: true}, nil
	}
	return libvirt.BlockJob{}, nil
}

func (f *fakeHV) WaitReady(ctx context.Context, name, disk string, report func(cur, end uint64)) error {
	j, err := f.BlockJob(name, disk)
	if err != nil {
		return err
	}
	if j.Type == libvirt.JobNone {
		return errors.New("job ended")
	}
	if report != nil {
		report(1, 1)
	}
	return nil
}

func (f *fakeHV) Pivot(name, disk string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := f.dom(name)
	if err != nil {
		return err
	}
	f.log("Pivot %s %s", name, disk)
	j := d.jobs[disk]
	if j == nil {
		return errors.New("no job")
	}
	delete(d.jobs, disk)
	// libvirt updates both definitions on pivot.
	for _, def := range []*libvirtxml.Domain{d.live, d.inactive} {
		x := libvirt.FindDisk(def, disk)
		switch j.typ {
		case libvirt.JobCopy:
			x.Source = j.dest.Source
			x.Driver = &libvirtxml.DomainDiskDriver{Name: "qemu", Type: j.dest.Driver.Type}
			if j.shallow {
				x.BackingStore = j.dest.BackingStore
			} else {
				x.BackingStore = nil
			}
		case libvirt.JobActiveCommit:
			b := x.BackingStore
			x.Source = b.Source
			x.Driver = &libvirtxml.DomainDiskDriver{Name: "qemu", Type: b.Format.Type}
			x.BackingStore = b.BackingStore
		}
	}
	return nil
}

func (f *fakeHV) AbortJob(name, disk string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := f.dom(name)
	if err != nil {
		return err
	}
	f.log("AbortJob %s %s", name, disk)
	delete(d.jobs, disk)
	return nil
}

func (f *fakeHV) DefineSecret(s *libvirtxml.Secret) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("DefineSecret %s private=%s usage=%s", s.UUID, s.Private, s.Usage.Volume)
	if _, ok := f.secrets[s.UUID]; !ok {
		f.secrets[s.UUID] = nil
	}
	return nil
}

func (f *fakeHV) SecretExists(uuid string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.secrets[uuid]
	return ok, nil
}

func (f *fakeHV) HasSecretValue(uuid string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.secrets[uuid] != nil, nil
}

func (f *fakeHV) SetSecretValue(uuid string, value []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("SetSecretValue %s", uuid) // never the value
	f.secrets[uuid] = append([]byte(nil), value...)
	return nil
}

func (f *fakeHV) SecretValue(uuid string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v := f.secrets[uuid]
	if v == nil {
		return nil, lv.Error{Code: uint32(lv.ErrNoSecret), Message: "no secret"}
	}
	return append([]byte(nil), v...), nil // a fresh buffer, as from libvirtd's RPC
}

func (f *fakeHV) UndefineSecret(uuid string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("UndefineSecret %s", uuid)
	delete(f.secrets, uuid)
	return nil
}

func (f *fakeHV) Pool(name string) (libvirt.Pool, error) {
	if name != f.pool.Name {
		return libvirt.Pool{}, fmt.Errorf("cannot find storage pool %q: no such pool (pools: [enc]); create one with virsh pool-define-as", name)
	}
	return f.pool, nil
}

func (f *fakeHV) RefreshPool(name string) error { return nil }

// Volume describes a file the fake qemu-img made in the pool as libvirt
// would: its format from the name, LUKS-encrypted.
func (f *fakeHV) Volume(pool, name string) (libvirt.Volume, error) {
	path := filepath.Join(f.pool.Path, name)
	if _, err := os.Stat(path); pool != f.pool.Name || err != nil {
		return libvirt.Volume{}, fmt.Errorf("cannot find volume %q in pool %q: no such volume", name, pool)
	}
	format := "raw"
	if strings.HasSuffix(name, ".qcow2") {
		format = "qcow2"
	}
	return libvirt.Volume{Pool: pool, Name: name, Path: path, Format: format, Encryption: "luks"}, nil
}

// CreateVolume makes the file libvirtd's qemu-img create would make; an
// encrypted qcow2 it made reads as one encrypted layer (made, shared with
// the fixture's fakeImages).
func (f *fakeHV) CreateVolume(pool string, vol *libvirtxml.StorageVolume) (libvirt.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("CreateVolume"); err != nil {
		return libvirt.Volume{}, err
	}
	f.log("CreateVolume %s", strings.Join(libvirt.CreateVolume{Pool: pool, Vol: vol}.Argv(), " "))
	path := filepath.Join(f.pool.Path, vol.Name)
	if _, err := os.Lstat(path); err == nil {
		return libvirt.Volume{}, fmt.Errorf("cannot create volume %q in pool %q: storage volume name '%s' already in use", vol.Name, pool, vol.Name)
	}
	if err := os.WriteFile(path, []byte("fake image"), 0o600); err != nil {
		return libvirt.Volume{}, err
	}
	if f.made != nil && vol.Target.Format.Type == qemuimg.QCOW2 {
		f.made[path] = true
	}
	v, err := f.Volume(pool, vol.Name)
	v.Capacity = vol.Capacity.Value
	return v, err
}

func (f *fakeHV) DeleteVolume(pool, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("DeleteVolume %s %s", pool, name)
	return removeIfExists(filepath.Join(f.pool.Path, name))
}

func (f *fakeHV) ResolveVolumes(disks []libvirt.Disk) error { return nil }

// mutations are the logged calls that change something.
func (f *fakeHV) mutations() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// fakeImages runs the real qemu-img driver against a recording runner,
// creating the files qemu-img would create.
type fakeImages struct {
	*qemuimg.Driver
	rec   *execx.Recorder
	infos map[string]string // path → `qemu-img info --backing-chain` JSON
	made  map[string]bool   // encrypted qcow2 images Create made
}

func newFakeImages() *fakeImages {
	rec := &execx.Recorder{Responses: map[string]execx.Result{}}
	return &fakeImages{Driver: &qemuimg.Driver{Runner: rec}, rec: rec, infos: map[string]string{}, made: map[string]bool{}}
}

func (f *fakeImages) InfoChain(ctx context.Context, path, format string) ([]qemuimg.Info, error) {
	out, ok := f.infos[path]
	if !ok && f.made[path] {
		// A target or overlay the fake qemu-img made: one encrypted layer.
		out, ok = fmt.Sprintf(`{"filename":%q,"format":"qcow2","virtual-size":1,"encrypted":true}`, path), true
	}
	if !ok {
		return nil, fmt.Errorf("cannot read image %s: No such file or directory", path)
	}
	return qemuimg.ParseInfoChain([]byte(out))
}

func (f *fakeImages) Create(ctx context.Context, o qemuimg.CreateOptions) error {
	if err := f.Driver.Create(ctx, o); err != nil {
		return err
	}
	if o.Format == qemuimg.QCOW2 && len(o.Secret) > 0 && o.BackingPath == "" {
		f.made[o.Path] = true
	}
	return os.WriteFile(o.Path, []byte("fake image"), 0o600)
}

func progressDiscard() progress.Reporter { return progress.Discard }
