package migrate_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cryptshift/cryptshift/internal/doors/qemuimg"
	"github.com/cryptshift/cryptshift/internal/harness/libvirttest"
	"github.com/cryptshift/cryptshift/internal/runner/migrate"
	"github.com/cryptshift/cryptshift/libvirt"
)

// sparseVirtual is the virtual size of the sparse guest disk: large next
// to its data, so that a target that stores the virtual size shows.
const sparseVirtual = 1 << 30

// sparseGuest defines a guest whose one disk vda is a qcow2 overlay on a
// raw base (a backing chain), virtual bytes large (a multiple of 10 MiB
// from 160 MiB): 8 MiB of data in the base, 4 MiB of data and 16 MiB of
// written zeros in the overlay. It returns the plaintext reference of the
// guest-visible data and the data's size.
func sparseGuest(t *testing.T, e *env, name string, virtual int64, start bool) (ref string, data int64) {
	t.Helper()
	ctx := context.Background()
	q := qemuimg.New()
	base := filepath.Join(e.dir, name+"-base.raw")
	top := filepath.Join(e.dir, name+"-top.qcow2")
	tenth := virtual / 10 >> 20 // MiB
	must(t, q.Create(ctx, qemuimg.CreateOptions{Path: base, Format: "raw", Size: virtual}))
	writeAt(t, base, tenth<<20, strings.Repeat("secret mail in the base ", (8<<20)/24))
	must(t, q.Create(ctx, qemuimg.CreateOptions{Path: top, Format: "qcow2", Size: virtual, BackingPath: base, BackingFormat: "raw"}))
	qemuIO(t, top, fmt.Sprintf("write -P 0x6d %dM 4M", 6*tenth), fmt.Sprintf("write -z %dM 16M", 7*tenth))
	ref = filepath.Join(e.dir, name+".want")
	must(t, q.Create(ctx, qemuimg.CreateOptions{Path: ref, Format: "raw", Size: virtual}))
	must(t, q.Convert(ctx, qemuimg.Image{Path: top, Format: "qcow2"}, qemuimg.Image{Path: ref, Format: "raw"}))
	e.d.Define(t, libvirttest.Domain(name, libvirttest.FileDisk("vda", top, "qcow2")), start)
	return ref, 8<<20 + 4<<20
}

// TestHostMigrateQcow2ChainSparse migrates a qcow2 disk with a backing
// chain onto an encrypted qcow2 pool volume, offline and live: the
// decrypted target compares identical with the data before, the target
// allocates about the data (not the virtual size) and has no backing file,
// libvirt describes the volume as qcow2 with LUKS, the live and persistent
// definitions (virsh dumpxml and domblklist as oracles) name it, the live
// guest keeps running and the offline guest starts on it.
func TestHostMigrateQcow2ChainSparse(t *testing.T) {
	e := newEnv(t)
	for _, mode := range []string{migrate.ModeOffline, migrate.ModeLive} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			name := "sparse-" + mode
			live := mode == migrate.ModeLive
			ref, data := sparseGuest(t, e, name, sparseVirtual, live)
			pid := 0
			if live {
				pid = e.d.QemuPID(name)
			}
			o := migrate.Options{Domain: name, Connect: e.d.Socket, To: "pool:enc", AllowPlaintextSecretStore: plaintextStoreOK, Mode: mode,
				JournalPath: filepath.Join(e.dir, "journal", name+".journal"), IterTimeMS: iterTime}
			if !live {
				// As in production: qemu's default LUKS parameters, and
				// libvirt creates the target as a volume.
				o.IterTimeMS = 0
			}
			var out bytes.Buffer
			o.Out = &out
			res, err := migrate.Run(ctx, o)
			if err != nil {
				t.Fatalf("%v\n%s\n%s", err, out.String(), e.d.DomainLog(name))
			}
			target := filepath.Join(e.pool, name+"-vda.qcow2")
			if d := res.Plan.Disks[0]; d.TargetFormat != "qcow2" || d.TargetPath != target {
				t.Fatalf("planned target %s (%s), want the encrypted qcow2 %s", d.TargetPath, d.TargetFormat, target)
			}
			for _, s := range res.Plan.Steps {
				if s.Action == "create-target" && (s.Command[0] == "libvirt:StorageVolCreateXML") == live {
					t.Fatalf("%s: the target was created by %s; want libvirt offline (default iteration time), qemu-img live (--iter-time)", mode, s.Command[0])
				}
			}
			for _, want := range []string{"allocation tables are not encrypted", "allocates"} {
				if !strings.Contains(out.String(), want) {
					t.Fatalf("the output does not say %q:\n%s", want, out.String())
				}
			}
			if live {
				if !strings.Contains(out.String(), "vda: pivot onto the target took") {
					t.Fatalf("the output does not report the pivot:\n%s", out.String())
				}
				if st, _ := e.c.DomainState(name); st != libvirt.Running || e.d.QemuPID(name) != pid {
					t.Fatalf("the guest stopped: state %s, qemu pid %d, want running %d", st, e.d.QemuPID(name), pid)
				}
			} else {
				// The guest starts on its encrypted disk: libvirt hands qemu
				// the key and qemu opens the encrypted qcow2.
				must(t, e.c.StartDomain(name))
			}

			// libvirt's storage driver describes the volume.
			v, err := e.c.Volume("enc", name+"-vda.qcow2")
			must(t, err)
			if v.Format != "qcow2" || v.Encryption != "luks" || v.Capacity != sparseVirtual {
				t.Fatalf("volume %+v, want qcow2 with luks encryption, %d bytes", v, sparseVirtual)
			}
			// The live and the persistent definition name the volume.
			var key []byte
			for _, inactive := range []bool{false, true} {
				dom, err := e.c.DomainXML(name, libvirt.XMLFlags{Inactive: inactive})
				must(t, err)
				x := libvirt.FindDisk(dom, "vda")
				if chain := libvirt.Chain(x); len(chain) != 1 || chain[0] != target || x.Driver == nil || x.Driver.Type != "qcow2" ||
					x.Source.Encryption == nil || x.Source.Encryption.Format != "luks" {
					t.Fatalf("inactive=%v: vda %v driver %+v encryption %+v, want the encrypted qcow2 %s alone", inactive, chain, x.Driver, x.Source.Encryption, target)
				}
				key, err = e.c.SecretValue(x.Source.Encryption.Secrets[0].UUID)
				must(t, err)
			}
			blk := e.d.Virsh(t, "domblklist", name)
			if !strings.Contains(blk, target) {
				t.Fatalf("virsh domblklist does not show %s:\n%s", target, blk)
			}
			xml := e.d.Virsh(t, "dumpxml", "--inactive", name)
			if !strings.Contains(xml, target) || !strings.Contains(xml, "<encryption format='luks'") || !strings.Contains(xml, "type='qcow2'") {
				t.Fatalf("virsh dumpxml --inactive does not show the encrypted qcow2:\n%s", xml)
			}

			// The data: identical, in one image without a backing file, and
			// no plaintext in the file.
			q := qemuimg.New()
			img := qemuimg.Image{Path: target, Format: "qcow2", Secret: key}
			if err := q.Compare(ctx, qemuimg.Image{Path: ref, Format: "raw"}, img, true); err != nil {
				t.Fatal(err)
			}
			chain, err := q.InfoChain(ctx, target, "qcow2")
			must(t, err)
			if len(chain) != 1 || chain[0].BackingFilename != "" || !chain[0].Encrypted {
				t.Fatalf("target info %+v, want one encrypted image without a backing file", chain)
			}
			raw, err := os.ReadFile(target)
			must(t, err)
			if bytes.Contains(raw, []byte("secret mail in the base")) {
				t.Fatal("plaintext found in the encrypted target")
			}
			// Allocation follows the data: 12 MiB of data, 2 MiB of LUKS
			// header (8 keyslots), qcow2 metadata; the 16 MiB of written
			// zeros and the rest of the 1 GiB are not stored. A live
			// migration adds what the idle guest wrote (nothing, or little).
			var st syscall.Stat_t
			must(t, syscall.Stat(target, &st))
			alloc := st.Blocks * 512
			if alloc < data || alloc > data+data*15/100+4<<20 {
				t.Fatalf("the target allocates %d bytes for %d bytes of data", alloc, data)
			}
			t.Logf("%s: target allocates %.1f MiB for %.1f MiB of data (%.1f MiB virtual); %s",
				mode, float64(alloc)/(1<<20), float64(data)/(1<<20), float64(sparseVirtual)/(1<<20), pivotLine(out.String()))
			must(t, e.c.DestroyDomain(name))
			checkNoKeyIn(t, o.JournalPath, key)
		})
	}
}

func pivotLine(out string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "pivot onto the target took") {
			return strings.TrimPrefix(l, "note: ")
		}
	}
	return "no pivot (offline)"
}

// checkNoKeyIn asserts that the journal holds no key and records the
// target format.
func checkNoKeyIn(t *testing.T, journal string, key []byte) {
	t.Helper()
	b, err := os.ReadFile(journal)
	must(t, err)
	if bytes.Contains(b, key) {
		t.Fatalf("%s holds the key", journal)
	}
	if !bytes.Contains(b, []byte(`"targetFormat":"qcow2"`)) {
		t.Fatalf("%s does not record the target format", journal)
	}
}

// TestHostTargetFormatRaw: --target-format raw puts a qcow2 chain into a
// raw LUKS image of the full virtual size (every block written), which
// libvirt describes as LUKS-encrypted; the guest's definition uses it.
func TestHostTargetFormatRaw(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const virtual = 160 << 20
	ref, _ := sparseGuest(t, e, "asraw", virtual, false)
	o := migrate.Options{Domain: "asraw", Connect: e.d.Socket, To: "pool:enc", AllowPlaintextSecretStore: plaintextStoreOK, Mode: migrate.ModeOffline,
		TargetFormat: migrate.TargetFormatRaw, JournalPath: filepath.Join(e.dir, "journal", "asraw.journal"), IterTimeMS: iterTime}
	var out bytes.Buffer
	o.Out = &out
	if _, err := migrate.Run(ctx, o); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "reveals nothing about which parts hold data") {
		t.Fatalf("the output does not state the raw trade-off:\n%s", out.String())
	}
	target := filepath.Join(e.pool, "asraw-vda.luks")
	dom, err := e.c.DomainXML("asraw", libvirt.XMLFlags{Inactive: true})
	must(t, err)
	x := libvirt.FindDisk(dom, "vda")
	if libvirt.SourcePath(x) != target || x.Driver.Type != "raw" {
		t.Fatalf("vda on %s (%+v), want raw LUKS %s", libvirt.SourcePath(x), x.Driver, target)
	}
	key, err := e.c.SecretValue(x.Source.Encryption.Secrets[0].UUID)
	must(t, err)
	must(t, qemuimg.New().Compare(ctx, qemuimg.Image{Path: ref, Format: "raw"}, targetImage(x, key), false))
	var st syscall.Stat_t
	must(t, syscall.Stat(target, &st))
	if st.Blocks*512 < virtual {
		t.Fatalf("the raw LUKS target allocates %d bytes, want the full virtual size %d (every block encrypted)", st.Blocks*512, virtual)
	}
	v, err := e.c.Volume("enc", "asraw-vda.luks")
	must(t, err)
	if v.Encryption != "luks" {
		t.Fatalf("volume %+v: libvirt does not see LUKS", v)
	}
	out2, err := exec.Command("qemu-img", "info", "--output=json", target).Output()
	must(t, err)
	if !bytes.Contains(out2, []byte(`"format": "luks"`)) {
		t.Fatalf("qemu-img info: %s", out2)
	}
}
