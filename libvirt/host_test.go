package libvirt_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/cryptshift/cryptshift/internal/doors/qemuimg"
	"github.com/cryptshift/cryptshift/internal/harness/libvirttest"
	"github.com/cryptshift/cryptshift/libvirt"
)

// TestHostLiveMovePrimitives walks the live design on a real libvirtd and
// qemu (TCG): an encrypted overlay snapshot freezes a raw disk, the frozen
// base is copied into a LUKS image, a shallow copy moves the guest onto an
// encrypted overlay above that image, and an active commit leaves it on the
// LUKS image alone — without the guest ever stopping.
func TestHostLiveMovePrimitives(t *testing.T) {
	d := libvirttest.Start(t)
	ctx := context.Background()
	c := d.Dial(t)
	q := qemuimg.New()
	dir := t.TempDir()
	src := filepath.Join(dir, "a.raw")
	pool := filepath.Join(dir, "pool")
	d.DefineDirPool(t, "enc", pool)
	const size = 8 << 20
	must(t, q.Create(ctx, qemuimg.CreateOptions{Path: src, Format: qemuimg.Raw, Size: size}))
	f, err := os.OpenFile(src, os.O_RDWR, 0)
	must(t, err)
	_, err = f.WriteAt([]byte("mail from before the move"), 1<<20)
	must(t, err)
	f.Close()

	d.Define(t, libvirttest.Domain("g1", libvirttest.FileDisk("vda", src, "raw")), true)
	pid := d.QemuPID("g1")

	uuid := "7d1c35a0-3a8e-4c8e-9d0e-5f1b8a7c6e01"
	key := []byte("0123456789abcdef0123456789abcdef")
	target := filepath.Join(pool, "g1-vda.luks")
	must(t, c.DefineSecret(&libvirtxml.Secret{Ephemeral: "no", Private: "no", UUID: uuid,
		Usage: &libvirtxml.SecretUsage{Type: "volume", Volume: target}}))
	must(t, c.SetSecretValue(uuid, key))
	got, err := c.SecretValue(uuid)
	must(t, err)
	if string(got) != string(key) {
		t.Fatal("secret value did not round-trip")
	}
	enc := &libvirtxml.DomainDiskEncryption{Format: "luks", Secrets: []libvirtxml.DomainDiskSecret{{Type: "passphrase", UUID: uuid}}}
	overlay := filepath.Join(pool, "g1-vda.overlay.qcow2")
	pivot := filepath.Join(pool, "g1-vda.pivot.qcow2")
	must(t, q.Create(ctx, qemuimg.CreateOptions{Path: target, Format: qemuimg.LUKS, Size: size, Secret: key, IterTimeMS: 10}))
	must(t, q.Create(ctx, qemuimg.CreateOptions{Path: overlay, Format: qemuimg.QCOW2, Size: size, Secret: key, IterTimeMS: 10, BackingPath: src, BackingFormat: "raw"}))
	must(t, q.Create(ctx, qemuimg.CreateOptions{Path: pivot, Format: qemuimg.QCOW2, Size: size, Secret: key, IterTimeMS: 10, BackingPath: target, BackingFormat: "luks"}))

	live, err := c.DomainXML("g1", libvirt.XMLFlags{})
	must(t, err)
	if conf, conn := libvirt.AgentConnected(live); conf || conn {
		t.Fatalf("agent: got configured=%v connected=%v, want neither", conf, conn)
	}
	snap := &libvirtxml.DomainSnapshot{Disks: &libvirtxml.DomainSnapshotDisks{Disks: []libvirtxml.DomainSnapshotDisk{{
		Name: "vda", Snapshot: "external", Driver: &libvirtxml.DomainDiskDriver{Type: "qcow2"},
		Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: overlay}, Encryption: enc},
	}}}}
	must(t, c.SnapshotDisks("g1", snap, false))
	live, err = c.DomainXML("g1", libvirt.XMLFlags{})
	must(t, err)
	if ch := libvirt.Chain(libvirt.FindDisk(live, "vda")); len(ch) != 2 || ch[0] != overlay || ch[1] != src {
		t.Fatalf("after snapshot: chain %v, want [%s %s]", ch, overlay, src)
	}

	must(t, q.Convert(ctx, qemuimg.Image{Path: src, Format: "raw"}, qemuimg.Image{Path: target, Format: "luks", Secret: key}))
	must(t, q.Compare(ctx, qemuimg.Image{Path: src, Format: "raw"}, qemuimg.Image{Path: target, Format: "luks", Secret: key}, false))

	dest := &libvirtxml.DomainDisk{
		Driver: &libvirtxml.DomainDiskDriver{Type: "qcow2"},
		Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: pivot}, Encryption: enc},
		BackingStore: &libvirtxml.DomainDiskBackingStore{
			Format: &libvirtxml.DomainDiskFormat{Type: "raw"},
			Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: target}, Encryption: enc},
		},
	}
	must(t, c.BlockCopy("g1", "vda", dest, true))
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	must(t, c.WaitReady(wctx, "g1", "vda", nil))
	must(t, c.Pivot("g1", "vda"))
	must(t, c.BlockCommitActive("g1", "vda"))
	must(t, c.WaitReady(wctx, "g1", "vda", nil))
	must(t, c.Pivot("g1", "vda"))
	if j, err := c.BlockJob("g1", "vda"); err != nil || j.Type != libvirt.JobNone {
		t.Fatalf("after pivot: job %+v, %v", j, err)
	}

	live, err = c.DomainXML("g1", libvirt.XMLFlags{})
	must(t, err)
	x := libvirt.FindDisk(live, "vda")
	if ch := libvirt.Chain(x); len(ch) != 1 || ch[0] != target {
		t.Fatalf("after commit: chain %v, want [%s]", ch, target)
	}
	if x.Source.Encryption == nil || x.Source.Encryption.Format != "luks" {
		t.Fatalf("after commit: the disk carries no luks encryption: %+v", x.Source)
	}
	if st, _ := c.DomainState("g1"); st != libvirt.Running || d.QemuPID("g1") != pid {
		t.Fatalf("guest stopped: state %s, qemu pid %d, want running %d", st, d.QemuPID("g1"), pid)
	}
	if out := d.Virsh(t, "domblklist", "g1"); !strings.Contains(out, target) {
		t.Fatalf("domblklist does not show %s:\n%s", target, out)
	}
	raw, err := os.ReadFile(target)
	must(t, err)
	if strings.Contains(string(raw), "mail from before") {
		t.Fatal("plaintext in the LUKS image")
	}

	must(t, c.RefreshPool("enc"))
	v, err := c.VolumeByPath(target)
	must(t, err)
	if v.Encryption != "luks" || v.Capacity != size {
		t.Fatalf("volume: got %+v, want luks of %d bytes", v, size)
	}
	p, err := c.Pool("enc")
	must(t, err)
	if p.Type != "dir" || p.Path != pool || !p.Active || p.Available == 0 {
		t.Fatalf("pool: got %+v", p)
	}
	if _, err := c.Pool("nope"); err == nil || !strings.Contains(err.Error(), "enc") {
		t.Fatalf("unknown pool: got %v, want an error listing the pools", err)
	}
	if _, err := c.Domain("nope"); err == nil || !strings.Contains(err.Error(), "no such domain") {
		t.Fatalf("unknown domain: got %v", err)
	}
	must(t, c.DestroyDomain("g1"))
	must(t, c.UndefineSecret(uuid))
	if ok, _ := c.SecretExists(uuid); ok {
		t.Fatal("secret still defined")
	}
}

// TestHostCreateEncryptedVolume creates encrypted volumes through libvirt
// (StorageVolCreateXML: libvirtd runs qemu-img create with the passphrase
// of a libvirt secret) and checks them with independent oracles: qemu-img
// reads the format and the encryption from the header, opens the image with
// the secret's value and refuses another passphrase; libvirt describes the
// volume; no copy of the passphrase stays in libvirt's storage state
// directory; an existing name is refused.
func TestHostCreateEncryptedVolume(t *testing.T) {
	d := libvirttest.Start(t)
	ctx := context.Background()
	c := d.Dial(t)
	q := qemuimg.New()
	dir := t.TempDir()
	pool := filepath.Join(dir, "pool")
	d.DefineDirPool(t, "enc", pool)
	plain := filepath.Join(dir, "plain.raw")
	const size = 32 << 20
	must(t, q.Create(ctx, qemuimg.CreateOptions{Path: plain, Format: qemuimg.Raw, Size: size}))
	f, err := os.OpenFile(plain, os.O_RDWR, 0)
	must(t, err)
	_, err = f.WriteAt([]byte("mail written through the volume's key"), 1<<20)
	must(t, err)
	f.Close()

	for i, tc := range []struct{ name, format, qemuFormat string }{
		{"g-vda.qcow2", "qcow2", qemuimg.QCOW2},
		{"g-vdb.luks", "raw", qemuimg.LUKS},
	} {
		path := filepath.Join(pool, tc.name)
		uuid := fmt.Sprintf("7d1c35a0-3a8e-4c8e-9d0e-5f1b8a7c6e1%d", i)
		key := []byte(fmt.Sprintf("volume key %d, 0123456789abcdef", i))
		must(t, c.DefineSecret(&libvirtxml.Secret{Ephemeral: "no", Private: "no", UUID: uuid,
			Usage: &libvirtxml.SecretUsage{Type: "volume", Volume: path}}))
		must(t, c.SetSecretValue(uuid, key))

		v, err := c.CreateVolume("enc", libvirt.NewEncryptedVolume(tc.name, tc.format, size, uuid))
		must(t, err)
		if v.Path != path || v.Format != tc.format || v.Encryption != "luks" || v.Capacity != size {
			t.Fatalf("%s: libvirt describes %+v, want %s, format %s, luks, %d bytes", tc.name, v, path, tc.format, size)
		}
		chain, err := q.InfoChain(ctx, path, tc.qemuFormat)
		must(t, err)
		if len(chain) != 1 || !chain[0].Encrypted || chain[0].VirtualSize != size || chain[0].BackingFilename != "" {
			t.Fatalf("%s: qemu-img info: %+v, want one encrypted image of %d bytes", tc.name, chain, size)
		}
		st, err := os.Stat(path)
		must(t, err)
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, want 0600", tc.name, st.Mode().Perm())
		}
		// The secret's value opens it: data written with it reads back;
		// another passphrase does not.
		img := qemuimg.Image{Path: path, Format: tc.qemuFormat, Secret: key}
		must(t, q.Convert(ctx, qemuimg.Image{Path: plain, Format: qemuimg.Raw}, img))
		must(t, q.Compare(ctx, qemuimg.Image{Path: plain, Format: qemuimg.Raw}, img, false))
		img.Secret = []byte("not the key")
		err = q.Compare(ctx, qemuimg.Image{Path: plain, Format: qemuimg.Raw}, img, false)
		if err == nil || !strings.Contains(err.Error(), "Invalid password") {
			t.Fatalf("%s: opened with another passphrase: %v", tc.name, err)
		}
		if _, err := c.CreateVolume("enc", libvirt.NewEncryptedVolume(tc.name, tc.format, size, uuid)); err == nil || !strings.Contains(err.Error(), "already") {
			t.Fatalf("%s: a second create: got %v, want a refusal", tc.name, err)
		}
	}
	// libvirtd passes the passphrase to qemu-img in a file in its storage
	// state directory (/run/libvirt/storage; in this harness DIR/run/storage)
	// and removes it once qemu-img is done.
	left, err := filepath.Glob(filepath.Join(d.Dir, "run", "storage", "*secret*"))
	must(t, err)
	if len(left) != 0 {
		t.Fatalf("libvirt left passphrase files behind: %v", left)
	}
	must(t, c.DeleteVolume("enc", "g-vda.qcow2"))
	if _, err := os.Stat(filepath.Join(pool, "g-vda.qcow2")); !os.IsNotExist(err) {
		t.Fatalf("the deleted volume's file: %v", err)
	}
}

func TestHostDialUnreachable(t *testing.T) {
	libvirttest.Start(t) // gate and prerequisites only; the dial goes elsewhere
	_, err := libvirt.Dial(filepath.Join(t.TempDir(), "no-such-sock"))
	if err == nil || !strings.Contains(err.Error(), "is libvirtd (or virtqemud) running") {
		t.Fatalf("got %v, want a connect error saying what to check", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
