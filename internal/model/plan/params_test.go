package plan

import (
	"reflect"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/doors/fs"
	"github.com/cryptshift/cryptshift/internal/doors/gpt"
	"github.com/cryptshift/cryptshift/luks"
	"github.com/cryptshift/cryptshift/lvm"
)

// What "cryptshift step" reads back is what the plan rendered, for every
// action cryptshift does itself.
func TestInternalRoundTrip(t *testing.T) {
	for _, p := range []*Params{
		{Partition: &Partition{Device: "/dev/sda", TableUUID: "t-1", WipePartitions: true, Partitions: []gpt.Partition{
			{Number: 1, Start: 1 << 20, Size: 256 << 20, Type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", Name: "esp", UUID: "u-1"},
			{Number: 2, Start: 257 << 20, Size: 1 << 30, Type: "E6D6D379-F507-44C2-A23C-238F2A3DF928", Name: "pv0", UUID: "u-2"}}}},
		{Partition: &Partition{Device: "/dev/vdb", TableUUID: "t-2", Partitions: []gpt.Partition{{Number: 1, Start: 1 << 20, Size: 1 << 20, Type: "T", Name: "n", UUID: "u"}}}},
		{Zero: &Zero{Device: "/dev/sda", Head: 1 << 20, Tail: 1 << 20}},
		{Zero: &Zero{Device: "/dev/sda2", Head: 1 << 20}},
		{Mkdir: &Mkdir{Path: "/target/root/luks-headers", Mode: 0o700}},
		{KeyFile: &KeyFile{Path: "/target/etc/cryptsetup-keys.d/var_crypt.key", Bytes: 4096}},
		{Remove: &Remove{Path: "/target/etc/cryptsetup-keys.d/var_crypt.key"}},
		{WriteBlock: &Block{File: "/target/etc/crypttab", Kind: "crypttab", Layout: "mail-host"}},
		{RestoreBlock: &Block{File: "/target/etc/fstab", Kind: "fstab", Layout: "mail-host"}},
		{Initramfs: &Initramfs{Root: "/target"}},
	} {
		argv, err := p.Command()
		if err != nil {
			t.Fatal(err)
		}
		if argv[0] != "cryptshift" || argv[1] != "step" {
			t.Fatalf("%v is not a cryptshift step", argv)
		}
		back, err := ParseInternal(argv[2:])
		if err != nil {
			t.Fatalf("%v: %v", argv, err)
		}
		if !reflect.DeepEqual(back, p) {
			t.Errorf("%v read back as %+v", argv, back)
		}
	}
}

func TestParseInternalRefuses(t *testing.T) {
	for args, want := range map[string]string{
		"":                                   "no action given",
		"teleport":                           "unknown action",
		"keyfile --bytes 4096":               "--path is required",
		"write-block --file f --block x":     "--block must be KIND:LAYOUT",
		"zero --device d --head x":           "invalid value",
		"mkdir --path p --mode 99":           "bad mode",
		"remove --path p extra":              "unexpected argument",
		"partition --device d --partition x": "lacks N:",
		"partition --device d --partition 0:start=1":   "bad number",
		"partition --device d --partition 1:start=a":   "invalid syntax",
		"partition --device d --partition 1:color=red": "unknown key",
	} {
		var a []string
		if args != "" {
			a = strings.Fields(args)
		}
		if _, err := ParseInternal(a); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", args, err, want)
		}
	}
}

// A step made from typed parameters renders its command, undo and
// secrets; a step whose command was edited afterwards is refused.
func TestRenderAndCheckRendering(t *testing.T) {
	s := NewStep(Step{ID: "luksFormat:/dev/vg0/root", Action: ActLUKSFormat, Target: "/dev/vg0/root"},
		&Params{LUKSFormat: &luks.Format{Device: "/dev/vg0/root", Params: luks.Params{Cipher: "aes-xts-plain64", KeySize: 512, Hash: "sha256",
			KDF: luks.KDF{PBKDF: "argon2id", IterTimeMs: 2000, MemoryKiB: 1 << 20, Parallel: 4}, SectorSize: 4096}, Key: luks.Key{Secret: SecretPassphrase}}},
		&Params{Wipe: &fs.Wipe{Device: "/dev/vg0/root"}})
	if got := strings.Join(s.Undo, " "); got != "wipefs --all /dev/vg0/root" {
		t.Errorf("undo %q", got)
	}
	if !reflect.DeepEqual(s.Secrets, []SecretRef{{FD: 0, Secret: SecretPassphrase}}) {
		t.Errorf("secrets %+v", s.Secrets)
	}
	if err := s.CheckRendering(); err != nil {
		t.Fatal(err)
	}
	edited := s
	edited.Command = append([]string{}, s.Command...)
	edited.Command[len(edited.Command)-1] = "/dev/sdb"
	if err := edited.CheckRendering(); err == nil || !strings.Contains(err.Error(), "is not what its parameters render") {
		t.Errorf("an edited command: %v", err)
	}
	edited = s
	edited.Secrets = nil
	if err := edited.CheckRendering(); err == nil || !strings.Contains(err.Error(), "secrets") {
		t.Errorf("dropped secrets: %v", err)
	}
	for _, p := range []*Params{nil, {}, {PVCreate: &lvm.PVCreate{Device: "a"}, VGRemove: &lvm.VGRemove{VG: "v"}}} {
		if _, err := p.Command(); err == nil {
			t.Errorf("%+v rendered", p)
		}
	}
}
