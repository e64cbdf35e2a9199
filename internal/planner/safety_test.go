package planner

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/model/inventory"
	"github.com/cryptshift/cryptshift/internal/model/layout"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/playbooks"
)

// appliedAfterReboot is the minimal example applied, after a reboot:
// mappings closed, nothing mounted, swap off.
func appliedAfterReboot(t *testing.T) *inventory.Inventory {
	t.Helper()
	inv := readInventory(t, "../../testdata/inventories/minimal-applied.json")
	var keep []inventory.Device
	for _, d := range inv.Devices {
		if d.Kind != inventory.KindCrypt {
			keep = append(keep, d)
		}
	}
	inv.Devices, inv.Mounts, inv.Swaps = keep, nil, nil
	return inv
}

// --device NAME=PATH with a NAME the layout does not have was ignored, and
// the layout's own device path used: now an error naming the disks.
func TestDeviceOverrideMustNameADisk(t *testing.T) {
	f, inv := loadExample(t, "minimal")
	tests := []struct {
		devices map[string]string
		want    string
	}{
		{map[string]string{"disk1": "/dev/vdb"},
			`error at playbooks/examples/minimal.yaml $.disks, line 8 col 3: --device "disk1=/dev/vdb" names no disk of this layout; fix: name one of the layout's disks: disk0`},
		{map[string]string{"disk0": "/dev/vd a"},
			`--device "disk0=/dev/vd a": device "/dev/vd a" contains a blank or a backslash, which no device node has`},
		{map[string]string{"disk0": "/dev/vda\n"},
			`--device "disk0=/dev/vda\n": the path contains a line break (U+000A) at byte 8`},
		{map[string]string{"disk0": "/dev/../etc/passwd"},
			`--device "disk0=/dev/../etc/passwd": device "/dev/../etc/passwd" is not a clean absolute path`},
	}
	for _, tt := range tests {
		_, rep, err := Plan(f, inv, Options{Devices: tt.devices})
		if err == nil || !strings.Contains(rep.Error(), tt.want) {
			t.Errorf("%v:\ngot  %v\nwant %s", tt.devices, rep.Error(), tt.want)
		}
	}
	// The disk's own name still works.
	if _, rep, err := Plan(f, inv, Options{Devices: map[string]string{"disk0": "/dev/vda"}}); err != nil {
		t.Fatalf("%v %v", err, rep.Problems)
	}
}

// A target root holding a line break would end up in the script's comments
// and every mount step.
func TestRootIsChecked(t *testing.T) {
	f, inv := loadExample(t, "minimal")
	_, rep, err := Plan(f, inv, Options{Root: "/target\nrm -rf /"})
	if err == nil || !strings.Contains(rep.Error(), `target root "/target\nrm -rf /" contains a line break (U+000A) at byte 7`) {
		t.Fatalf("got %v", rep.Error())
	}
}

// An existing volume whose inventory shows no signature was formatted
// without --allow-destroy. Now only one that the inventory shows probed
// and found blank is; anything else is refused and says why.
func TestExistingVolumeMustBeProvenBlank(t *testing.T) {
	f, _ := loadExample(t, "minimal")
	inv := appliedAfterReboot(t)
	root := inv.Device("/dev/vg0/root")
	root.Content = nil
	_, _, err := Plan(f, inv, Options{})
	var refused *RefusedError
	if !errors.As(err, &refused) {
		t.Fatalf("got %v, want a refusal", err)
	}
	if len(refused.Steps) != 1 || refused.Steps[0].ID != "wipe:/dev/mapper/vg0-root" ||
		!strings.Contains(err.Error(), "the inventory does not show that it was probed and found blank; re-run cryptshift inventory") {
		t.Fatalf("got %v", err)
	}

	root.Blank = "probed"
	p, _, err := Plan(f, inv, Options{})
	if err != nil {
		t.Fatalf("a volume proven blank: %v", err)
	}
	if s := p.Step("luksFormat:/dev/vg0/root"); s == nil || s.Destructive {
		t.Fatalf("got %v", stepIDs(p))
	}
}

// A LUKS header's UUID is any text a prepared disk wants it to be; a header
// that matches the plan but whose UUID is not a UUID is not kept (its UUID
// would be written into crypttab), and replacing it needs --allow-destroy.
func TestHostileUUIDIsNotWrittenToTabs(t *testing.T) {
	f, _ := loadExample(t, "minimal")
	inv := appliedAfterReboot(t)
	inv.Device("/dev/vg0/root").Content.UUID = "00d88bfd-b2b5-49b5-8342-e19f8b6cb674 none\nroot2 /dev/sda"
	boot := inv.Device("/dev/vda3")
	boot.Content.UUID = "1234-5678 /mnt ext4 defaults 0 0\nUUID=x"
	_, _, err := Plan(f, inv, Options{})
	var refused *RefusedError
	if !errors.As(err, &refused) {
		t.Fatalf("got %v, want a refusal", err)
	}
	msg := err.Error()
	for _, want := range []string{
		`/dev/mapper/vg0-root: a LUKS2 header (aes-xts-plain64, 2 keyslots) UUID 00d88bfd-b2b5-49b5-8342-e19f8b6cb674 none\nroot2 /dev/sda label "root" (its LUKS header has a UUID "00d88bfd-b2b5-49b5-8342-e19f8b6cb674 none\nroot2 /dev/sda" that is not a UUID)`,
		`/dev/vda3: an ext4 filesystem UUID 1234-5678 /mnt ext4 defaults 0 0\nUUID=x`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal\n%s\ndoes not say\n%s", msg, want)
		}
	}
	p, _, err := Plan(f, inv, Options{AllowDestroy: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range p.Crypttab {
		if strings.Contains(e.Line, "root2") || strings.Contains(e.Line, "\n") {
			t.Errorf("crypttab carries the hostile UUID: %q", e.Line)
		}
	}
	for _, e := range p.Fstab {
		if strings.Contains(e.Line, "/mnt") || strings.Contains(e.Line, "\n") {
			t.Errorf("fstab carries the hostile UUID: %q", e.Line)
		}
	}
}

// What an inventory says is on a disk reaches the refusal, the table and
// the script's comments; control characters in it arrive escaped, one line
// per destroyed device.
func TestInventoryTextInDescriptionsIsPrintable(t *testing.T) {
	f, inv := loadExample(t, "mail-host")
	withContent(t, inv, "/dev/sdb", &inventory.Content{Type: "crypto_LUKS", Version: "2\nrm -rf /", UUID: "u\x1b[2J",
		Label: "l\nx", Note: "n\u202e"})
	inv.Device("/dev/sdb").Content.LUKS = nil
	_, _, err := Plan(f, inv, Options{})
	if err == nil {
		t.Fatal("no refusal")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 3 || !strings.Contains(lines[1], `a LUKS2\nrm -rf / header UUID u\x1b[2J label "l\nx"`) {
		t.Fatalf("got %q", lines)
	}
}

// Mount points may hold blanks; fstab gets them as \040, so mount reads
// one field.
func TestBlankInMountPointIsEscapedInFstab(t *testing.T) {
	e, _ := playbooks.Load("mail-host")
	y := strings.Replace(string(e.Layout), "mount: /var/vmail ", "mount: /var/v mail\\store ", 1)
	f, rep := layout.Parse("m.yaml", []byte(y))
	if rep.HasErrors() {
		t.Fatal(rep.Error())
	}
	_, inv := loadExample(t, "mail-host")
	p, _, err := Plan(f, inv, Options{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, l := range p.Fstab {
		if l.File == `/var/v mail\store` {
			found = true
			if !strings.Contains(l.Line, ` /var/v\040mail\134store ext4 nodev,nosuid,noexec,noatime 0 2`) {
				t.Errorf("got %q", l.Line)
			}
		}
	}
	if !found {
		t.Fatalf("no fstab entry for the mount: %v", p.Fstab)
	}
	if s := p.Step(`mount:/target/var/v mail\store`); s == nil || fmt.Sprintf("%q", s.Command) != `["mount" "--mkdir" "-t" "ext4" "/dev/mapper/vmail_crypt" "/target/var/v mail\\store"]` {
		t.Fatalf("got %+v", s)
	}
}

// The spec a plan file carries (apply --plan re-plans it) is validated
// like a layout file: a hand-edited plan cannot bring in a value the
// layout reader would refuse.
func TestPlanFileSpecIsValidated(t *testing.T) {
	f, inv := loadExample(t, "mail-host")
	p, _, err := Plan(f, inv, Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := p.JSON()
	reviewed, err := plan.Parse("p.json", []byte(strings.Replace(string(b), `"mount": "/var/vmail"`, `"mount": "/var/vmail\nx"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	_, rep, err := Plan(&layout.File{Name: "p.json", Layout: reviewed.Spec, Pos: map[string]layout.Pos{}}, inv, Options{})
	if err == nil || !strings.Contains(rep.Error(), `error at p.json $.volumes[2].mount: value "/var/vmail\nx" contains a line break (U+000A) at byte 10`) {
		t.Fatalf("got %v", rep.Error())
	}
}
