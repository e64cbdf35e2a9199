package libvirt

import (
	"strings"
	"testing"
	"time"
)

func TestOpArgv(t *testing.T) {
	for _, tt := range []struct {
		op   Op
		want string
	}{
		{ShutdownDomain{Domain: "web", Wait: 5 * time.Minute}, "libvirt:DomainShutdown domain=web wait=5m0s"},
		{ShutdownDomain{Domain: "web", Wait: time.Minute, ThenDestroy: true}, "libvirt:DomainShutdown domain=web wait=1m0s then:libvirt:DomainDestroy"},
		{StartDomain{Domain: "web"}, "libvirt:DomainCreate domain=web"},
		{SuspendDomain{Domain: "web"}, "libvirt:DomainSuspend domain=web"},
		{ResumeDomain{Domain: "web"}, "libvirt:DomainResume domain=web"},
		{DefineDisks{Domain: "web", Disks: []DiskSource{{"vda", "/p/a.img"}, {"vdb", "/p/b.img"}}}, "libvirt:DomainDefineXML domain=web vda=/p/a.img vdb=/p/b.img"},
		{DefineDisks{}, "libvirt:DomainDefineXML"},
		{DefineFile{File: "/var/lib/cryptshift/web.xml"}, "virsh define /var/lib/cryptshift/web.xml"},
		{Snapshot{Domain: "web", Overlays: []DiskSource{{"vda", "/o/a.qcow2"}}}, "libvirt:DomainSnapshotCreateXML domain=web flags=disk-only,reuse-external,no-metadata,atomic,quiesce-when-the-guest-agent-answers vda=/o/a.qcow2"},
		{BlockCopy{Domain: "web", Disk: "vda", Dest: "/p/a.img"}, "libvirt:DomainBlockCopy domain=web disk=vda dest=/p/a.img flags=reuse-external,transient-job"},
		{BlockCopy{Domain: "web", Disk: "vda", Dest: "/p/a.img", Shallow: true}, "libvirt:DomainBlockCopy domain=web disk=vda dest=/p/a.img flags=shallow,reuse-external,transient-job"},
		{Pivot{}, "libvirt:DomainBlockJobAbort flags=pivot"},
		{Pivot{Disk: "vda"}, "libvirt:DomainBlockJobAbort disk=vda flags=pivot"},
		{DefineSecret{UUID: "u-1", Volume: "/p/a.img"}, "libvirt:SecretDefineXML uuid=u-1 usage=volume:/p/a.img private=no"},
		{SetSecretValue{UUID: "u-1"}, "libvirt:SecretSetValue uuid=u-1 value=<random key, never shown>"},
		{UndefineSecret{UUID: "u-1"}, "libvirt:SecretUndefine uuid=u-1"},
		{CreateVolume{Pool: "enc", Vol: NewEncryptedVolume("a.img", "raw", 1<<20, "u-1")}, "libvirt:StorageVolCreateXML pool=enc name=a.img capacity=1048576 format=raw encryption=luks secret=u-1 mode=0600"},
		{DeleteVolume{Pool: "enc", Name: "a.img"}, "libvirt:StorageVolDelete pool=enc name=a.img"},
	} {
		if got := strings.Join(tt.op.Argv(), " "); got != tt.want {
			t.Errorf("%T:\ngot  %s\nwant %s", tt.op, got, tt.want)
		}
	}
	got := strings.Join(Argv(SuspendDomain{Domain: "web"}, Pivot{Disk: "vda"}, ResumeDomain{Domain: "web"}), " ")
	if want := "libvirt:DomainSuspend domain=web libvirt:DomainBlockJobAbort disk=vda flags=pivot libvirt:DomainResume domain=web"; got != want {
		t.Errorf("Argv:\ngot  %s\nwant %s", got, want)
	}
}
