package inventory

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/doors/probe"
	"github.com/cryptshift/cryptshift/internal/harness/testtier"
)

const minimalInv = `{"apiVersion": "cryptshift/v1", "kind": "Inventory", "host": "vps01",
 "devices": [{"path": "/dev/vda", "kind": "disk", "size": 42949672960, "logicalSectorSize": 512,
   "table": {"type": "gpt", "partitions": [{"number": 1, "start": 1048576, "size": 1048576, "type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4"}]}}],
 "pvs": [], "vgs": [{"name": "vg0", "size": 1073741824, "free": 0, "extentSize": 4194304, "extentCount": 256, "freeCount": 0}],
 "lvs": [], "mounts": [], "swaps": []}`

func TestMinimalInventoryParses(t *testing.T) {
	if _, err := Parse("inv.json", []byte(minimalInv)); err != nil {
		t.Fatal(err)
	}
}

// Numbers no system reports are refused before the planner computes with
// them; the partition whose start plus size overflows int64 used to pass
// the fit check (the sum wrapped negative) and was planned around.
func TestNumbersAreRangeChecked(t *testing.T) {
	tests := []struct{ old, new, want string }{
		{`"start": 1048576, "size": 1048576`, `"start": 4611686018427387904, "size": 4611686018427387904`,
			`$.devices[0].table.partitions[0].start: 4611686018427387904 is out of range (0 to 1152921504606846976 bytes)`},
		{`"start": 1048576, "size": 1048576`, `"start": 1048576, "size": 1152921504606846976`,
			`$.devices[0].table.partitions[0]: partition 1 (start 1048576, size 1152921504606846976) does not fit the 42949672960-byte device`},
		{`"size": 42949672960`, `"size": 1383505805528216371`,
			`$.devices[0].size: 1383505805528216371 is out of range (0 to 1152921504606846976 bytes)`},
		{`"size": 42949672960`, `"size": -1`, `$.devices[0].size: -1 is out of range`},
		{`"logicalSectorSize": 512`, `"logicalSectorSize": 513`, `$.devices[0].logicalSectorSize: 513 is not a sector size`},
		{`"number": 1,`, `"number": 0,`, `$.devices[0].table.partitions[0].number: 0 is out of range (1 to 65535)`},
		{`"extentSize": 4194304`, `"extentSize": 0`, `$.vgs[0].extentSize: 0 is not an extent size`},
		{`"extentSize": 4194304`, `"extentSize": 3000000`, `$.vgs[0].extentSize: 3000000 is not an extent size`},
		{`"extentCount": 256`, `"extentCount": 9223372036854775807`, `$.vgs[0].extentCount: 9223372036854775807 is out of range`},
		{`"freeCount": 0`, `"freeCount": 257`, `$.vgs[0].freeCount: 257 free extents of 256`},
		{`"freeCount": 0`, `"freeCount": -5`, `$.vgs[0].freeCount: -5 free extents of 256`},
		{`"pvs": []`, `"pvs": [{"device": "/dev/vda", "size": 10, "free": 11}]`, `$.pvs[0].free: 11 free bytes on a 10-byte physical volume`},
		{`"lvs": []`, `"lvs": [{"vg": "vg0", "name": "x", "path": "/dev/vg0/x", "size": -4096, "active": false}]`, `$.lvs[0].size: -4096 is out of range`},
	}
	for _, tt := range tests {
		if !strings.Contains(minimalInv, tt.old) {
			t.Fatalf("no %q in the base inventory", tt.old)
		}
		_, err := Parse("inv.json", []byte(strings.Replace(minimalInv, tt.old, tt.new, 1)))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s:\ngot  %v\nwant %s", tt.new, err, tt.want)
		}
	}
}

// Strings that would end a comment line, a tab file field or a terminal's
// sanity are refused in an inventory file, wherever they are.
func TestInventoryTextIsChecked(t *testing.T) {
	tests := []struct{ old, new, want string }{
		{`"host": "vps01"`, `"host": "vps01\nrm -rf /"`, `$.host: value "vps01\nrm -rf /" contains a line break (U+000A) at byte 5`},
		{`"path": "/dev/vda"`, `"path": "/dev/vda\u001b]0;owned\u0007"`, `$.devices[0].path: value "/dev/vda\x1b]0;owned\a" contains the control character U+001B at byte 8`},
		{`"logicalSectorSize": 512,`, `"logicalSectorSize": 512, "content": {"type": "crypto_LUKS", "label": "ok", "luks": {"version": 2, "uuid": "u", "cipher": "aes-xts-plain64\n# injected", "keySize": 512, "sectorSize": 4096, "dataOffset": 16777216, "keyslots": []}},`,
			`$.devices[0].content.luks.cipher: value "aes-xts-plain64\n# injected" contains a line break (U+000A) at byte 15`},
		{`"logicalSectorSize": 512,`, `"logicalSectorSize": 512, "content": {"type": "ext4", "label": "mail\u202egnp.exe"},`,
			`$.devices[0].content.label: value "mail\u202egnp.exe" contains the invisible formatting character U+202E at byte 4`},
		{`"mounts": []`, `"mounts": [{"source": "/dev/vda1", "target": "/mnt/a\tb", "fstype": "ext4"}]`, `$.mounts[0].target: value "/mnt/a\tb" contains a tab (U+0009) at byte 6`},
	}
	for _, tt := range tests {
		_, err := Parse("inv.json", []byte(strings.Replace(minimalInv, tt.old, tt.new, 1)))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s:\ngot  %v\nwant %s", tt.new, err, tt.want)
		}
	}
	// The target's crypttab and fstab are file contents: line breaks are
	// their syntax.
	withTarget := strings.Replace(minimalInv, `"swaps": []`, `"swaps": [], "target": {"root": "/target", "crypttab": "a b\n\tc\n", "fstab": "x y\n"}`, 1)
	if _, err := Parse("inv.json", []byte(withTarget)); err != nil {
		t.Fatal(err)
	}
}

// What Gather reads from disks is made printable, so that its own output
// always reads back.
func TestMakePrintableRoundTrips(t *testing.T) {
	inv, err := Parse("inv.json", []byte(minimalInv))
	if err != nil {
		t.Fatal(err)
	}
	inv.Host = "evil\nhost"
	inv.Devices[0].Content = &Content{Type: "ext4", Label: "lab\x1b[31m", UUID: "u\u202e"}
	inv.Devices[0].Model = "bad\xffutf8"
	inv.Target = &Target{Root: "/target", Crypttab: "keep\n\tthis\n"}
	inv.makePrintable()
	b, err := inv.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse("again.json", b)
	if err != nil {
		t.Fatalf("a gathered inventory does not read back: %v", err)
	}
	if back.Host != `evil\nhost` || back.Devices[0].Content.Label != `lab\x1b[31m` || back.Devices[0].Model != `bad\xffutf8` || back.Target.Crypttab != "keep\n\tthis\n" {
		t.Fatalf("got host %q label %q model %q crypttab %q", back.Host, back.Devices[0].Content.Label, back.Devices[0].Model, back.Target.Crypttab)
	}
}

// Gather calls a loop device blank only when every region probe.Blank
// reads is zero, records that, and records a leftover LUKS2 copy as
// unknown data; a hostile LUKS2 label written by cryptsetup comes back
// escaped.
func TestHostGatherBlankAndHostileLabels(t *testing.T) {
	testtier.Host(t, "losetup", "cryptsetup", "lvm")
	dir := t.TempDir()
	img := func(name string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, nil, 0o600)
		os.Truncate(p, 32<<20)
		return p
	}
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte("gather-test"), 0o600)
	blank, leftover, hostile := img("blank.img"), img("leftover.img"), img("hostile.img")
	for _, p := range []string{leftover, hostile} {
		args := []string{"luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", pass}
		if p == leftover {
			args = append(args, "--luks2-metadata-size", "1m", "--luks2-keyslots-size", "1m")
		} else {
			args = append(args, "--label", "vmail\n/dev/sda / ext4 defaults 0 1")
		}
		if out, err := exec.Command("cryptsetup", append(args, p)...).CombinedOutput(); err != nil {
			t.Fatalf("luksFormat: %v %s", err, out)
		}
	}
	f, _ := os.OpenFile(leftover, os.O_WRONLY, 0)
	f.WriteAt(make([]byte, 1<<20), 0) // the primary header and its JSON
	f.Close()
	blankDev, leftoverDev, hostileDev := losetup(t, blank), losetup(t, leftover), losetup(t, hostile)

	inv, err := Gather(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d := inv.Device(blankDev); d == nil || d.Content != nil || d.Blank != probe.BlankMethod {
		t.Errorf("blank device: got %+v", d)
	}
	if d := inv.Device(leftoverDev); d == nil || d.Content == nil || d.Content.Type != "unknown" || d.Blank != "" ||
		!strings.Contains(d.Content.Note, "LUKS2 secondary header at byte 1048576") {
		t.Errorf("wiped-start LUKS2 device: got %+v (content %+v)", d, d.Content)
	}
	d := inv.Device(hostileDev)
	if d == nil || d.Content == nil || d.Content.Label != `vmail\n/dev/sda / ext4 defaults 0 1` {
		t.Fatalf("hostile label: got %+v", d)
	}
	b, _ := inv.Marshal()
	if _, err := Parse("gathered.json", b); err != nil {
		t.Fatalf("a gathered inventory does not read back: %v", err)
	}
}
