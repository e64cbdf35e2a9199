package migrate_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/cryptshift/cryptshift/internal/doors/qemuimg"
	"github.com/cryptshift/cryptshift/internal/harness/libvirttest"
	"github.com/cryptshift/cryptshift/internal/harness/vmtest"
	"github.com/cryptshift/cryptshift/internal/runner/migrate"
	"github.com/cryptshift/cryptshift/libvirt"
)

// writerScript runs in a tiny busybox guest: it writes record i ("REC
// 0000000042") into 512-byte sector i of /dev/vda, each with fsync, and
// reports "ACK n" on the console after every 16 records: records 0..n-1
// reached the virtual disk. It writes until the disk's end, then idles.
const writerScript = `
n=$(( $(cat /sys/block/vda/size) ))
i=0
echo "WRITER START $n"
while [ $i -lt $n ]; do
	printf 'REC %010d\n' $i | dd of=/dev/vda bs=512 seek=$i count=1 conv=sync,notrunc,fsync 2>/dev/null || { echo "WRITE-ERROR $i"; break; }
	i=$((i+1))
	[ $((i % 16)) -eq 0 ] && echo "ACK $i"
done
echo "WRITER DONE $i"
while :; do sleep 1000; done
`

var ackRE = regexp.MustCompile(`ACK (\d+)`)

// lastACK is the highest record count the guest reported as durable.
func lastACK(serial string) int {
	n := 0
	for _, m := range ackRE.FindAllStringSubmatch(serial, -1) {
		if v, _ := strconv.Atoi(m[1]); v > n {
			n = v
		}
	}
	return n
}

func waitACK(t *testing.T, d *libvirttest.Daemon, name string, atLeast int, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		s := d.SerialLog(name)
		if n := lastACK(s); n >= atLeast {
			return n
		}
		if bytes.Contains([]byte(s), []byte("WRITE-ERROR")) {
			t.Fatalf("the guest could not write:\n%s", s)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest did not acknowledge %d records within %s:\n%s", atLeast, within, s)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestHostLiveMigrationUnderWrites boots a tiny guest (the VM tier's
// kernel with a busybox initramfs) that writes numbered records to its disk
// without pause, migrates that disk live, keeps the guest writing on the
// encrypted target, and then checks that every record the guest reported
// durable is on the target, in order, with no gap — and that the guest
// never stopped.
func TestHostLiveMigrationUnderWrites(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	kernel, err := vmtest.Kernel(ctx)
	if err != nil {
		t.Fatalf("cannot get the VM tier's kernel: %v", err)
	}
	initrd, err := vmtest.BuildInitramfs(ctx, t.TempDir(), writerScript, nil)
	if err != nil {
		t.Fatalf("cannot build the writer's initramfs: %v", err)
	}
	disk := filepath.Join(e.dir, "w-a.raw")
	q := qemuimg.New()
	must(t, q.Create(ctx, qemuimg.CreateOptions{Path: disk, Format: "raw", Size: 16 << 20}))
	dom := libvirttest.Domain("w", libvirttest.FileDisk("vda", disk, "raw"))
	dom.Memory.Value = 256
	dom.OS = &libvirtxml.DomainOS{Type: &libvirtxml.DomainOSType{Arch: "x86_64", Machine: "pc", Type: "hvm"},
		Kernel: kernel, Initrd: initrd, Cmdline: vmtest.GuestCmdline}
	e.d.Define(t, dom, true)
	pid := e.d.QemuPID("w")

	before := waitACK(t, e.d, "w", 64, 3*time.Minute)
	o := migrate.Options{Domain: "w", Connect: e.d.Socket, To: "pool:enc", AllowPlaintextSecretStore: plaintextStoreOK, Mode: migrate.ModeLive,
		JournalPath: filepath.Join(e.dir, "journal", "w.journal"), IterTimeMS: iterTime}
	var out bytes.Buffer
	o.Out = &out
	start := time.Now()
	if _, err := migrate.Run(ctx, o); err != nil {
		t.Fatalf("%v\n%s\n%s", err, out.String(), e.d.DomainLog("w"))
	}
	took := time.Since(start)
	during := lastACK(e.d.SerialLog("w"))
	// Keep writing on the encrypted target for a while.
	after := waitACK(t, e.d, "w", during+64, 2*time.Minute)
	if st, _ := e.c.DomainState("w"); st != libvirt.Running || e.d.QemuPID("w") != pid {
		t.Fatalf("the guest stopped: state %s, qemu pid %d, was %d", st, e.d.QemuPID("w"), pid)
	}
	if during-before < 16 {
		t.Fatalf("the guest wrote only %d records during the %s migration; the test proves nothing", during-before, took)
	}
	must(t, e.c.DestroyDomain("w"))
	final := lastACK(e.d.SerialLog("w"))

	// Decrypt the target into a scratch file and read the records back.
	dom2, err := e.c.DomainXML("w", libvirt.XMLFlags{Inactive: true})
	must(t, err)
	x := libvirt.FindDisk(dom2, "vda")
	target := libvirt.SourcePath(x)
	if x.Source.Encryption == nil || filepath.Dir(target) != e.pool {
		t.Fatalf("vda is not on an encrypted volume in the pool: %s %+v", target, x.Source.Encryption)
	}
	key, err := e.c.SecretValue(x.Source.Encryption.Secrets[0].UUID)
	must(t, err)
	plain := filepath.Join(t.TempDir(), "plain.raw")
	must(t, q.Create(ctx, qemuimg.CreateOptions{Path: plain, Format: "raw", Size: 16 << 20}))
	must(t, q.Convert(ctx, qemuimg.Image{Path: target, Format: "luks", Secret: key}, qemuimg.Image{Path: plain, Format: "raw"}))
	data, err := os.ReadFile(plain)
	must(t, err)
	present := 0
	for i := 0; i*512 < len(data); i++ {
		want := fmt.Sprintf("REC %010d\n", i)
		sector := data[i*512 : i*512+512]
		if string(sector[:len(want)]) != want {
			// The first sector without its record ends the sequence; no
			// record may follow a gap.
			for j := i + 1; j*512 < len(data); j++ {
				if bytes.HasPrefix(data[j*512:], []byte("REC ")) {
					t.Fatalf("record %d is missing but sector %d holds %q: a write was lost or reordered", i, j, data[j*512:j*512+15])
				}
			}
			break
		}
		if !bytes.Equal(sector[len(want):], make([]byte, 512-len(want))) {
			t.Fatalf("sector %d holds more than its record", i)
		}
		present = i + 1
	}
	if present < final {
		t.Fatalf("the guest acknowledged %d records but only %d are on the target", final, present)
	}
	t.Logf("live migration under writes: %s; the guest had acknowledged %d records before, %d at the end of the migration, %d when stopped; %d records on the target, in order, no gap",
		took.Round(time.Millisecond), before, during, after, present)
}
