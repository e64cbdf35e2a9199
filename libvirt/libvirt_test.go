package libvirt

import (
	"os"
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"
)

func TestParseConnect(t *testing.T) {
	tests := []struct {
		in         string
		wantSocket string // "" with wantErr
		wantURI    string
		wantErr    string
	}{
		{in: "/run/libvirt/virtqemud-sock", wantSocket: "/run/libvirt/virtqemud-sock", wantURI: "qemu:///system"},
		{in: "qemu:///system?socket=/tmp/x/libvirt-sock", wantSocket: "/tmp/x/libvirt-sock", wantURI: "qemu:///system"},
		{in: "qemu+unix:///system?socket=/s", wantSocket: "/s", wantURI: "qemu:///system"},
		{in: "qemu+ssh://root@host/system", wantErr: "must run on the guest's host"},
		{in: "qemu+tcp://host/system", wantErr: "must run on the guest's host"},
		{in: "qemu:///session", wantErr: "only the system instance"},
		{in: "xen:///system", wantErr: "qemu/KVM guests only"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			ep, err := ParseConnect(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ep.Socket != tt.wantSocket || ep.URI != tt.wantURI {
				t.Fatalf("got %+v, want socket %q uri %q", ep, tt.wantSocket, tt.wantURI)
			}
		})
	}
	// The default picks one of the system sockets.
	ep, err := ParseConnect("")
	if err != nil || ep.URI != DefaultURI || !strings.HasPrefix(ep.Socket, "/run/libvirt/") {
		t.Fatalf("default: got %+v, %v", ep, err)
	}
}

func TestDisksClassification(t *testing.T) {
	doc, err := os.ReadFile("testdata/mail.xml")
	if err != nil {
		t.Fatal(err)
	}
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(string(doc)); err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		typ, path, format string
		skip, refuse      string // substrings; "" means none
	}{
		"vda": {typ: "file", path: "/var/lib/libvirt/images/mail-root.qcow2", format: "qcow2"},
		"vdb": {typ: "block", path: "/dev/vg0/mail-store", format: "raw"},
		"vdc": {typ: "volume", format: "raw"},
		"sda": {typ: "file", path: "/var/lib/libvirt/images/debian-12.iso", format: "raw", skip: "cdrom"},
		"vdd": {typ: "file", path: "/srv/keys.img", format: "raw", skip: "read-only"},
		"sdb": {typ: "file", skip: "cdrom"},
		"vde": {typ: "file", path: "/pool/enc.qcow2", format: "qcow2", skip: "already encrypted"},
		"vdf": {typ: "network", format: "raw", refuse: "network disk"},
		"vdg": {typ: "file", path: "/srv/shared.img", format: "raw", refuse: "shareable"},
		"vdh": {typ: "file", path: "/srv/old.vmdk", format: "vmdk", refuse: "format \"vmdk\""},
	}
	disks := Disks(&dom)
	if len(disks) != len(want) {
		t.Fatalf("got %d disks, want %d", len(disks), len(want))
	}
	for _, d := range disks {
		w, ok := want[d.Target]
		if !ok {
			t.Errorf("unexpected disk %s", d.Target)
			continue
		}
		if d.Type != w.typ || d.Path != w.path || d.Format != w.format {
			t.Errorf("%s: got type %q path %q format %q, want %q %q %q", d.Target, d.Type, d.Path, d.Format, w.typ, w.path, w.format)
		}
		check := func(what, got, want string) {
			if (want == "") != (got == "") || !strings.Contains(got, want) {
				t.Errorf("%s: %s: got %q, want it to contain %q", d.Target, what, got, want)
			}
		}
		check("skip", d.Skip, w.skip)
		check("refuse", d.Refuse, w.refuse)
	}
	var names []string
	for _, d := range Migratable(disks) {
		names = append(names, d.Target)
	}
	if got := strings.Join(names, ","); got != "vda,vdb,vdc" {
		t.Errorf("migratable: got %s, want vda,vdb,vdc", got)
	}
	if vol := FindDisk(&dom, "vdc"); vol == nil || vol.Source.Volume.Volume != "mail-spool.img" {
		t.Errorf("FindDisk(vdc): got %+v", vol)
	}
}

func TestChain(t *testing.T) {
	x := &libvirtxml.DomainDisk{
		Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: "/pool/o.qcow2"}},
		BackingStore: &libvirtxml.DomainDiskBackingStore{
			Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: "/src/b.qcow2"}},
			BackingStore: &libvirtxml.DomainDiskBackingStore{
				Source: &libvirtxml.DomainDiskSource{Block: &libvirtxml.DomainDiskSourceBlock{Dev: "/dev/sdz"}},
			},
		},
	}
	if got := strings.Join(Chain(x), " "); got != "/pool/o.qcow2 /src/b.qcow2 /dev/sdz" {
		t.Fatalf("got %q", got)
	}
}

func TestUUIDRoundTrip(t *testing.T) {
	in := "a40dbc7b-d59e-4e08-8814-753cfa87e3f7"
	u, err := parseUUID(in)
	if err != nil {
		t.Fatal(err)
	}
	if got := uuidString(u); got != in {
		t.Fatalf("got %q, want %q", got, in)
	}
	for _, bad := range []string{"", "xyz", "a40dbc7b-d59e-4e08-8814-753cfa87e3fg"} {
		if _, err := parseUUID(bad); err == nil {
			t.Errorf("parseUUID(%q): got nil error", bad)
		}
	}
}
