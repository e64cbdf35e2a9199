package migrate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/cryptshift/cryptshift/libvirt"
)

// maxDomainXML bounds a saved domain definition (libvirt's own are a few
// KiB; a guest with hundreds of disks stays far below this).
const maxDomainXML = 4 << 20

// xmlHypervisor answers a dry-run's questions about the domain from a
// saved definition (virsh dumpxml --inactive DOMAIN > FILE), so that a
// migration can be planned where libvirtd does not run. Everything else
// (pools, volumes) goes to next: the daemon when it answers, else
// noDaemon, which says that libvirtd is needed for it.
type xmlHypervisor struct {
	Hypervisor
	dom   *libvirtxml.Domain
	state libvirt.State
}

// DomainXMLNote is the dry-run's note on what a saved definition cannot
// tell.
const DomainXMLNote = "planned from the saved definition %s (--domain-xml), not from libvirtd: the guest's state was taken to be what --mode %s needs (%s) and was not checked; run the dry-run against libvirtd before migrating"

func newXMLHypervisor(file, domain, mode string, next Hypervisor) (*xmlHypervisor, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, usage(fmt.Errorf("cannot read --domain-xml %s: %w", file, err))
	}
	defer f.Close()
	b := make([]byte, maxDomainXML+1)
	n, err := f.Read(b)
	for err == nil && n < len(b) {
		var m int
		m, err = f.Read(b[n:])
		n += m
	}
	if n > maxDomainXML {
		return nil, usage(fmt.Errorf("cannot read --domain-xml %s: larger than %d bytes; is it a domain definition?", file, maxDomainXML))
	}
	dom := &libvirtxml.Domain{}
	if err := dom.Unmarshal(string(b[:n])); err != nil {
		return nil, usage(fmt.Errorf("cannot read --domain-xml %s: not a libvirt domain definition: %w; save one with virsh dumpxml --inactive %s", file, err, domain))
	}
	if dom.Name != domain {
		return nil, usage(fmt.Errorf("cannot plan the migration of %s from --domain-xml %s: it defines domain %q", domain, file, dom.Name))
	}
	if next == nil {
		next = noDaemon{}
	}
	state := libvirt.ShutOff
	if mode == ModeLive {
		state = libvirt.Running
	}
	return &xmlHypervisor{Hypervisor: next, dom: dom, state: state}, nil
}

func (x *xmlHypervisor) Domain(name string) (libvirt.Domain, error) {
	if name != x.dom.Name {
		return libvirt.Domain{}, fmt.Errorf("domain %q is not the one in --domain-xml (%s)", name, x.dom.Name)
	}
	return libvirt.Domain{Name: x.dom.Name, UUID: x.dom.UUID, Persistent: true, State: x.state}, nil
}

func (x *xmlHypervisor) DomainNames() ([]string, error) { return []string{x.dom.Name}, nil }

func (x *xmlHypervisor) DomainState(name string) (libvirt.State, error) {
	if _, err := x.Domain(name); err != nil {
		return "", err
	}
	return x.state, nil
}

func (x *xmlHypervisor) DomainXML(name string, _ libvirt.XMLFlags) (*libvirtxml.Domain, error) {
	if _, err := x.Domain(name); err != nil {
		return nil, err
	}
	doc, err := x.dom.Marshal()
	if err != nil {
		return nil, err
	}
	c := &libvirtxml.Domain{}
	return c, c.Unmarshal(doc) // a copy: callers edit what they get
}

// errNoDaemon is what a dry-run from --domain-xml says when it needs a
// fact only libvirtd has.
var errNoDaemon = errors.New("libvirtd is not reachable and --domain-xml holds only the domain; plan where libvirtd runs, or use --to vg:NAME (which needs no pool)")

// noDaemon is the libvirtd that is not there: it answers every question
// with errNoDaemon.
type noDaemon struct{}

func (noDaemon) Domain(string) (libvirt.Domain, error)     { return libvirt.Domain{}, errNoDaemon }
func (noDaemon) DomainNames() ([]string, error)            { return nil, errNoDaemon }
func (noDaemon) DomainState(string) (libvirt.State, error) { return "", errNoDaemon }
func (noDaemon) DomainXML(string, libvirt.XMLFlags) (*libvirtxml.Domain, error) {
	return nil, errNoDaemon
}
func (noDaemon) DefineDomain(*libvirtxml.Domain) error { return errNoDaemon }
func (noDaemon) StartDomain(string) error              { return errNoDaemon }
func (noDaemon) ShutdownDomain(string) error           { return errNoDaemon }
func (noDaemon) DestroyDomain(string) error            { return errNoDaemon }
func (noDaemon) SuspendDomain(string) error            { return errNoDaemon }
func (noDaemon) ResumeDomain(string) error             { return errNoDaemon }
func (noDaemon) WaitState(context.Context, string, libvirt.State, time.Duration) error {
	return errNoDaemon
}
func (noDaemon) SnapshotDisks(string, *libvirtxml.DomainSnapshot, bool) error { return errNoDaemon }
func (noDaemon) BlockCopy(string, string, *libvirtxml.DomainDisk, bool) error { return errNoDaemon }
func (noDaemon) BlockCommitActive(string, string) error                       { return errNoDaemon }
func (noDaemon) BlockJob(string, string) (libvirt.BlockJob, error) {
	return libvirt.BlockJob{}, errNoDaemon
}
func (noDaemon) WaitReady(context.Context, string, string, func(cur, end uint64)) error {
	return errNoDaemon
}
func (noDaemon) Pivot(string, string) error            { return errNoDaemon }
func (noDaemon) AbortJob(string, string) error         { return errNoDaemon }
func (noDaemon) DefineSecret(*libvirtxml.Secret) error { return errNoDaemon }
func (noDaemon) SecretExists(string) (bool, error)     { return false, errNoDaemon }
func (noDaemon) HasSecretValue(string) (bool, error)   { return false, errNoDaemon }
func (noDaemon) SetSecretValue(string, []byte) error   { return errNoDaemon }
func (noDaemon) SecretValue(string) ([]byte, error)    { return nil, errNoDaemon }
func (noDaemon) UndefineSecret(string) error           { return errNoDaemon }
func (noDaemon) Pool(string) (libvirt.Pool, error)     { return libvirt.Pool{}, errNoDaemon }
func (noDaemon) RefreshPool(string) error              { return errNoDaemon }
func (noDaemon) CreateVolume(string, *libvirtxml.StorageVolume) (libvirt.Volume, error) {
	return libvirt.Volume{}, errNoDaemon
}
func (noDaemon) DeleteVolume(string, string) error { return errNoDaemon }
func (noDaemon) Volume(string, string) (libvirt.Volume, error) {
	return libvirt.Volume{}, errNoDaemon
}

// ResolveVolumes: a file or block disk needs no daemon; a disk given as
// a pool volume does.
func (noDaemon) ResolveVolumes(disks []libvirt.Disk) error {
	for _, d := range disks {
		if d.Type == "volume" && d.Refuse == "" && d.Skip == "" {
			return fmt.Errorf("disk %s: %w", d.Target, errNoDaemon)
		}
	}
	return nil
}
