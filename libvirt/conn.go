// Package libvirt is cryptshift's door to libvirtd: a connection through
// github.com/digitalocean/go-libvirt (pure Go RPC, no libvirt C library),
// domain, snapshot, block-job, secret and storage calls, and discovery of a
// domain's disks. Every XML document is built and read with
// libvirt.org/go/libvirtxml; nothing here edits XML as text.
//
// Secret values pass through SetSecretValue and SecretValue only; they are
// never logged and never part of an error.
package libvirt

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	lv "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
)

// DefaultURI is the connection cryptshift uses when --connect is not given.
const DefaultURI = "qemu:///system"

// The sockets of the monolithic libvirtd and of the modular virtqemud, in the
// order a libvirt client tries them for qemu:///system (virtproxyd also
// listens on libvirt-sock on modular hosts).
var systemSockets = []string{"/run/libvirt/libvirt-sock", "/run/libvirt/virtqemud-sock"}

// Endpoint is where a --connect value leads: the unix socket to dial and the
// URI to open on the daemon behind it.
type Endpoint struct {
	Socket string
	URI    string
}

// ParseConnect turns a --connect value into an endpoint. It accepts a local
// URI (qemu:///system, qemu+unix:///system?socket=PATH) or the path of a
// daemon socket (for example /run/libvirt/virtqemud-sock).
func ParseConnect(connect string) (Endpoint, error) {
	if connect == "" {
		connect = DefaultURI
	}
	if strings.HasPrefix(connect, "/") {
		return Endpoint{Socket: connect, URI: DefaultURI}, nil
	}
	u, err := url.Parse(connect)
	if err != nil {
		return Endpoint{}, fmt.Errorf("cannot parse --connect %q: %w", connect, err)
	}
	scheme := strings.SplitN(u.Scheme, "+", 2)
	if scheme[0] != "qemu" {
		return Endpoint{}, fmt.Errorf("cannot use --connect %q: cryptshift migrates qemu/KVM guests only; use qemu:///system or a socket path", connect)
	}
	// cryptshift reads and writes the guest's image files itself (qemu-img),
	// so it must run on the host that holds them: no remote transports.
	if u.Host != "" || (len(scheme) == 2 && scheme[1] != "unix") {
		return Endpoint{}, fmt.Errorf("cannot use --connect %q: cryptshift must run on the guest's host, it copies the disk images itself; run it there with qemu:///system", connect)
	}
	if u.Path != "/system" {
		return Endpoint{}, fmt.Errorf("cannot use --connect %q: only the system instance (qemu:///system) is supported; session guests cannot use libvirt secrets and pools the same way", connect)
	}
	uri := DefaultURI
	if name := u.Query().Get("name"); name != "" {
		uri = name
	}
	if s := u.Query().Get("socket"); s != "" {
		return Endpoint{Socket: s, URI: uri}, nil
	}
	for _, s := range systemSockets {
		if _, err := os.Stat(s); err == nil {
			return Endpoint{Socket: s, URI: uri}, nil
		}
	}
	return Endpoint{Socket: systemSockets[0], URI: uri}, nil
}

// Conn is an open connection to libvirtd.
type Conn struct {
	l  *lv.Libvirt
	ep Endpoint
}

// Dial connects to the daemon named by connect (see ParseConnect).
func Dial(connect string) (*Conn, error) {
	ep, err := ParseConnect(connect)
	if err != nil {
		return nil, err
	}
	l := lv.NewWithDialer(dialers.NewLocal(dialers.WithSocket(ep.Socket), dialers.WithLocalTimeout(10*time.Second)))
	if err := l.ConnectToURI(lv.ConnectURI(ep.URI)); err != nil {
		return nil, fmt.Errorf("cannot connect to libvirt at %s (%s): %w; is libvirtd (or virtqemud) running? pass --connect with its URI or socket path", ep.Socket, ep.URI, err)
	}
	return &Conn{l: l, ep: ep}, nil
}

// Endpoint says where the connection leads.
func (c *Conn) Endpoint() Endpoint { return c.ep }

// Raw gives tests and callers with unusual needs the go-libvirt client.
func (c *Conn) Raw() *lv.Libvirt { return c.l }

// Close ends the connection.
func (c *Conn) Close() error { return c.l.Disconnect() }

// Version is the daemon's libvirt version, e.g. 9000000 for 9.0.0.
func (c *Conn) Version() (uint64, error) { return c.l.ConnectGetLibVersion() }

// IsNotFound reports whether err says that a domain, pool, volume or secret
// does not exist.
func IsNotFound(err error) bool {
	var e lv.Error
	if !errors.As(err, &e) {
		return false
	}
	switch lv.ErrorNumber(e.Code) {
	case lv.ErrNoDomain, lv.ErrNoStoragePool, lv.ErrNoStorageVol, lv.ErrNoSecret:
		return true
	}
	return false
}

// errorCode returns libvirt's error number carried by err, or -1.
func errorCode(err error) int {
	var e lv.Error
	if errors.As(err, &e) {
		return int(e.Code)
	}
	return -1
}
