package sysconf

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// TestProbeSignatureAgreesWithTheProbeDoor: verify and capture name a
// device's contents as the planner's prober does. pvcreate writes the LVM
// label into the second sector, but LVM accepts it in any of the first
// four (lib/label/label.c LABEL_SCAN_SECTORS): a PV labelled in sector 0
// or 2 is a PV, not "nothing recognised".
func TestProbeSignatureAgreesWithTheProbeDoor(t *testing.T) {
	dev := func(edit func(b []byte)) *bytes.Reader {
		b := make([]byte, 70<<10)
		edit(b)
		return bytes.NewReader(b)
	}
	lvm := func(sector int) func([]byte) {
		return func(b []byte) {
			o := sector * 512
			copy(b[o:], "LABELONE")
			copy(b[o+24:], "LVM2 001")
			copy(b[o+32:], "abcdefghijklmnopqrstuvwxyz012345")
		}
	}
	tests := []struct {
		name string
		dev  *bytes.Reader
		want string
	}{
		{"lvm label in sector 0", dev(lvm(0)), "LVM2_member"},
		{"lvm label in sector 1", dev(lvm(1)), "LVM2_member"},
		{"lvm label in sector 2", dev(lvm(2)), "LVM2_member"},
		{"lvm label in sector 3", dev(lvm(3)), "LVM2_member"},
		{"qcow2", dev(func(b []byte) { copy(b, QCOW2Magic); binary.BigEndian.PutUint32(b[4:], 3) }), "qcow2"},
		{"luks", dev(func(b []byte) { copy(b, "LUKS\xba\xbe\x00\x02") }), "luks"},
		{"ext3 keeps the manifest name ext4", dev(func(b []byte) {
			binary.LittleEndian.PutUint16(b[1024+0x38:], 0xEF53)
			binary.LittleEndian.PutUint32(b[1024+0x5c:], 0x4)
		}), "ext4"},
		{"md 1.2 member", dev(func(b []byte) { copy(b[4096:], "\xfc\x4e\x2b\xa9") }), "linux_raid_member"},
		{"zeros", dev(func([]byte) {}), ""},
		{"unnamed data", dev(func(b []byte) { b[100] = 1 }), ""},
	}
	for _, tt := range tests {
		if got := ProbeSignature(tt.dev); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}
