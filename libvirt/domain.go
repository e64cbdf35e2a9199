package libvirt

import (
	"context"
	"fmt"
	"sort"
	"time"

	lv "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"
)

// State is a domain's run state as libvirt names it.
type State string

const (
	Running  State = "running"
	Paused   State = "paused"
	ShutOff  State = "shut off"
	Shutdown State = "shutting down"
	Crashed  State = "crashed"
	Other    State = "other"
)

func stateOf(s lv.DomainState) State {
	switch s {
	case lv.DomainRunning, lv.DomainBlocked:
		return Running
	case lv.DomainPaused, lv.DomainPmsuspended:
		return Paused
	case lv.DomainShutoff:
		return ShutOff
	case lv.DomainShutdown:
		return Shutdown
	case lv.DomainCrashed:
		return Crashed
	}
	return Other
}

// Domain identifies a libvirt domain.
type Domain struct {
	Name       string
	UUID       string
	Persistent bool
	State      State
}

func (c *Conn) lookup(name string) (lv.Domain, error) {
	d, err := c.l.DomainLookupByName(name)
	if err != nil {
		if IsNotFound(err) {
			return d, fmt.Errorf("cannot find domain %q: no such domain on %s; list them with virsh list --all", name, c.ep.URI)
		}
		return d, fmt.Errorf("cannot look up domain %q: %w", name, err)
	}
	return d, nil
}

// Domain looks a domain up by name.
func (c *Conn) Domain(name string) (Domain, error) {
	d, err := c.lookup(name)
	if err != nil {
		return Domain{}, err
	}
	p, err := c.l.DomainIsPersistent(d)
	if err != nil {
		return Domain{}, fmt.Errorf("cannot inspect domain %q: %w", name, err)
	}
	st, _, err := c.l.DomainGetState(d, 0)
	if err != nil {
		return Domain{}, fmt.Errorf("cannot read the state of domain %q: %w", name, err)
	}
	return Domain{Name: d.Name, UUID: uuidString(d.UUID), Persistent: p == 1, State: stateOf(lv.DomainState(st))}, nil
}

// DomainNames lists every domain, running or defined.
func (c *Conn) DomainNames() ([]string, error) {
	doms, _, err := c.l.ConnectListAllDomains(1, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot list domains: %w", err)
	}
	var names []string
	for _, d := range doms {
		names = append(names, d.Name)
	}
	sort.Strings(names)
	return names, nil
}

// DomainState returns a domain's run state.
func (c *Conn) DomainState(name string) (State, error) {
	d, err := c.lookup(name)
	if err != nil {
		return "", err
	}
	st, _, err := c.l.DomainGetState(d, 0)
	if err != nil {
		return "", fmt.Errorf("cannot read the state of domain %q: %w", name, err)
	}
	return stateOf(lv.DomainState(st)), nil
}

// XMLFlags select which definition DomainXML returns.
type XMLFlags struct {
	// Inactive returns the persistent definition (what the next boot uses)
	// instead of the running one.
	Inactive bool
	// Secure includes security-sensitive parts (graphics passwords). Only
	// for a definition that is defined back at once; never write it to disk.
	Secure bool
}

// DomainXML returns a domain's definition.
func (c *Conn) DomainXML(name string, f XMLFlags) (*libvirtxml.Domain, error) {
	d, err := c.lookup(name)
	if err != nil {
		return nil, err
	}
	var flags lv.DomainXMLFlags
	if f.Inactive {
		flags |= lv.DomainXMLInactive
	}
	if f.Secure {
		flags |= lv.DomainXMLSecure
	}
	doc, err := c.l.DomainGetXMLDesc(d, flags)
	if err != nil {
		return nil, fmt.Errorf("cannot read the definition of domain %q: %w", name, err)
	}
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(doc); err != nil {
		return nil, fmt.Errorf("cannot parse the definition of domain %q: %w", name, err)
	}
	return &dom, nil
}

// DefineDomain replaces a domain's persistent definition. A running domain
// keeps running on its current devices; the definition applies at its next
// start.
func (c *Conn) DefineDomain(dom *libvirtxml.Domain) error {
	doc, err := dom.Marshal()
	if err != nil {
		return fmt.Errorf("cannot encode the definition of domain %q: %w", dom.Name, err)
	}
	if _, err := c.l.DomainDefineXMLFlags(doc, lv.DomainDefineValidate); err != nil {
		return fmt.Errorf("cannot define domain %q: %w", dom.Name, err)
	}
	return nil
}

// StartDomain boots a defined domain.
func (c *Conn) StartDomain(name string) error {
	d, err := c.lookup(name)
	if err != nil {
		return err
	}
	if err := c.l.DomainCreate(d); err != nil {
		return fmt.Errorf("cannot start domain %q: %w", name, err)
	}
	return nil
}

// ShutdownDomain asks the guest to shut down (ACPI or agent); it returns at
// once. Use WaitState to see it happen.
func (c *Conn) ShutdownDomain(name string) error {
	d, err := c.lookup(name)
	if err != nil {
		return err
	}
	if err := c.l.DomainShutdown(d); err != nil {
		return fmt.Errorf("cannot shut down domain %q: %w", name, err)
	}
	return nil
}

// DestroyDomain powers a domain off at once, like pulling the plug.
func (c *Conn) DestroyDomain(name string) error {
	d, err := c.lookup(name)
	if err != nil {
		return err
	}
	if err := c.l.DomainDestroy(d); err != nil {
		return fmt.Errorf("cannot power off domain %q: %w", name, err)
	}
	return nil
}

// SuspendDomain pauses the guest's virtual CPUs.
func (c *Conn) SuspendDomain(name string) error {
	d, err := c.lookup(name)
	if err != nil {
		return err
	}
	if err := c.l.DomainSuspend(d); err != nil {
		return fmt.Errorf("cannot pause domain %q: %w", name, err)
	}
	return nil
}

// ResumeDomain lets a paused guest run again.
func (c *Conn) ResumeDomain(name string) error {
	d, err := c.lookup(name)
	if err != nil {
		return err
	}
	if err := c.l.DomainResume(d); err != nil {
		return fmt.Errorf("cannot resume domain %q: %w", name, err)
	}
	return nil
}

// WaitState polls until the domain reaches want or ctx ends.
func (c *Conn) WaitState(ctx context.Context, name string, want State, every time.Duration) error {
	for {
		st, err := c.DomainState(name)
		if err != nil {
			return err
		}
		if st == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot wait for domain %q to be %s: it is still %s: %w", name, want, st, ctx.Err())
		case <-time.After(every):
		}
	}
}

// AgentConnected reports whether the domain has a qemu guest agent channel
// and libvirt sees the agent connected on it. A connected channel is what
// quiescing needs; whether the agent can freeze every filesystem is only
// known when it is asked.
func AgentConnected(live *libvirtxml.Domain) (configured, connected bool) {
	if live == nil || live.Devices == nil {
		return false, false
	}
	for _, ch := range live.Devices.Channels {
		if ch.Target == nil || ch.Target.VirtIO == nil || ch.Target.VirtIO.Name != "org.qemu.guest_agent.0" {
			continue
		}
		return true, ch.Target.VirtIO.State == "connected"
	}
	return false, false
}

func uuidString(u lv.UUID) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

func parseUUID(s string) (lv.UUID, error) {
	var u lv.UUID
	hex := make([]byte, 0, 32)
	for i := 0; i < len(s); i++ {
		if s[i] != '-' {
			hex = append(hex, s[i])
		}
	}
	if len(hex) != 32 {
		return u, fmt.Errorf("cannot parse UUID %q", s)
	}
	for i := 0; i < 16; i++ {
		var b byte
		for _, ch := range hex[2*i : 2*i+2] {
			b <<= 4
			switch {
			case ch >= '0' && ch <= '9':
				b |= ch - '0'
			case ch >= 'a' && ch <= 'f':
				b |= ch - 'a' + 10
			case ch >= 'A' && ch <= 'F':
				b |= ch - 'A' + 10
			default:
				return u, fmt.Errorf("cannot parse UUID %q", s)
			}
		}
		u[i] = b
	}
	return u, nil
}
