package libvirt

import (
	"fmt"
	"time"

	"libvirt.org/go/libvirtxml"
)

// Op is one libvirt call as plans, scripts and journals show it. cryptshift
// talks to libvirtd over its RPC protocol, not through virsh, so Argv names
// the RPC ("libvirt:DomainCreate domain=web"); the one exception is
// DefineFile, a command for a person to run. Ops are rendered here and
// nowhere else; the Conn method of the same name (DefineDomain for
// DefineDisks, SnapshotDisks for Snapshot) runs the call with the op's
// parameters.
type Op interface{ Argv() []string }

// Argv renders several calls one after the other, as a step that makes
// them shows them.
func Argv(ops ...Op) []string {
	var out []string
	for _, op := range ops {
		out = append(out, op.Argv()...)
	}
	return out
}

// DiskSource names what a disk (by target, "vda") is put on.
type DiskSource struct {
	Disk   string `json:"disk"`
	Source string `json:"source"`
}

func sources(ds []DiskSource) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Disk+"="+d.Source)
	}
	return out
}

// withDomain leaves the domain out where the step has named it already.
func withDomain(call, domain string) []string {
	if domain == "" {
		return []string{call}
	}
	return []string{call, "domain=" + domain}
}

// ShutdownDomain asks Domain to power off (ACPI or guest agent) and waits up to
// Wait; with ThenDestroy, it powers the domain off if it has not.
type ShutdownDomain struct {
	Domain      string        `json:"domain"`
	Wait        time.Duration `json:"wait"`
	ThenDestroy bool          `json:"then_destroy,omitempty"`
}

func (s ShutdownDomain) Argv() []string {
	out := []string{"libvirt:DomainShutdown", "domain=" + s.Domain, "wait=" + s.Wait.String()}
	if s.ThenDestroy {
		out = append(out, "then:libvirt:DomainDestroy")
	}
	return out
}

// StartDomain starts Domain (DomainCreate).
type StartDomain struct {
	Domain string `json:"domain"`
}

func (s StartDomain) Argv() []string { return withDomain("libvirt:DomainCreate", s.Domain) }

// SuspendDomain pauses Domain.
type SuspendDomain struct {
	Domain string `json:"domain"`
}

func (s SuspendDomain) Argv() []string { return withDomain("libvirt:DomainSuspend", s.Domain) }

// ResumeDomain lets a paused Domain run again.
type ResumeDomain struct {
	Domain string `json:"domain"`
}

func (r ResumeDomain) Argv() []string { return withDomain("libvirt:DomainResume", r.Domain) }

// DefineDisks redefines Domain with Disks on new sources; the rest of the
// definition stays as libvirt has it.
type DefineDisks struct {
	Domain string       `json:"domain,omitempty"`
	Disks  []DiskSource `json:"disks,omitempty"`
}

func (d DefineDisks) Argv() []string {
	return append(withDomain("libvirt:DomainDefineXML", d.Domain), sources(d.Disks)...)
}

// DefineFile defines a domain from a saved definition: the way back a
// person takes by hand, so it renders as the virsh command.
type DefineFile struct {
	File string `json:"file"`
}

func (d DefineFile) Argv() []string { return []string{"virsh", "define", d.File} }

// Snapshot takes one atomic external disk-only snapshot of Domain onto
// the Overlays (which exist already), without snapshot metadata, quiesced
// when the guest agent answers.
type Snapshot struct {
	Domain   string       `json:"domain"`
	Overlays []DiskSource `json:"overlays"`
}

func (s Snapshot) Argv() []string {
	out := []string{"libvirt:DomainSnapshotCreateXML", "domain=" + s.Domain,
		"flags=disk-only,reuse-external,no-metadata,atomic,quiesce-when-the-guest-agent-answers"}
	return append(out, sources(s.Overlays)...)
}

// BlockCopy copies Disk of the running Domain onto Dest (which exists),
// only the top image with Shallow; see Conn.BlockCopy.
type BlockCopy struct {
	Domain  string `json:"domain"`
	Disk    string `json:"disk"`
	Dest    string `json:"dest"`
	Shallow bool   `json:"shallow,omitempty"`
}

func (b BlockCopy) Argv() []string {
	flags := "flags=reuse-external,transient-job"
	if b.Shallow {
		flags = "flags=shallow,reuse-external,transient-job"
	}
	return []string{"libvirt:DomainBlockCopy", "domain=" + b.Domain, "disk=" + b.Disk, "dest=" + b.Dest, flags}
}

// Pivot ends a block copy of Disk by switching the guest onto its
// destination (DomainBlockJobAbort with the pivot flag). Disk may be left
// out where the step has named it already.
type Pivot struct {
	Disk string `json:"disk,omitempty"`
}

func (p Pivot) Argv() []string {
	out := []string{"libvirt:DomainBlockJobAbort"}
	if p.Disk != "" {
		out = append(out, "disk="+p.Disk)
	}
	return append(out, "flags=pivot")
}

// DefineSecret defines the secret UUID for the volume at Volume, not
// private (so it can be read back for a resume).
type DefineSecret struct {
	UUID   string `json:"uuid"`
	Volume string `json:"volume"`
}

func (d DefineSecret) Argv() []string {
	return []string{"libvirt:SecretDefineXML", "uuid=" + d.UUID, "usage=volume:" + d.Volume, "private=no"}
}

// SetSecretValue stores a value in the secret UUID. The op never holds
// the value: it goes to libvirtd over the connection only.
type SetSecretValue struct {
	UUID string `json:"uuid"`
}

func (s SetSecretValue) Argv() []string {
	return []string{"libvirt:SecretSetValue", "uuid=" + s.UUID, "value=<random key, never shown>"}
}

// UndefineSecret removes the secret UUID and its value.
type UndefineSecret struct {
	UUID string `json:"uuid"`
}

func (u UndefineSecret) Argv() []string { return []string{"libvirt:SecretUndefine", "uuid=" + u.UUID} }

// CreateVolume creates Vol in Pool; Argv shows the pool and what the
// volume XML asks for, the secret by UUID only.
type CreateVolume struct {
	Pool string                    `json:"pool"`
	Vol  *libvirtxml.StorageVolume `json:"-"`
}

func (c CreateVolume) Argv() []string {
	vol := c.Vol
	cmd := []string{"libvirt:StorageVolCreateXML", "pool=" + c.Pool, "name=" + vol.Name}
	if vol.Capacity != nil {
		cmd = append(cmd, fmt.Sprintf("capacity=%d", scale(vol.Capacity)))
	}
	if t := vol.Target; t != nil {
		if t.Format != nil {
			cmd = append(cmd, "format="+t.Format.Type)
		}
		if e := t.Encryption; e != nil {
			cmd = append(cmd, "encryption="+e.Format)
			if e.Secret != nil {
				cmd = append(cmd, "secret="+e.Secret.UUID)
			}
		}
		if t.Permissions != nil && t.Permissions.Mode != "" {
			cmd = append(cmd, "mode="+t.Permissions.Mode)
		}
	}
	return cmd
}

// DeleteVolume deletes the volume Name of Pool.
type DeleteVolume struct {
	Pool string `json:"pool"`
	Name string `json:"name"`
}

func (d DeleteVolume) Argv() []string {
	return []string{"libvirt:StorageVolDelete", "pool=" + d.Pool, "name=" + d.Name}
}
