package planner

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/model/inventory"
	"github.com/cryptshift/cryptshift/internal/model/layout"
	"github.com/cryptshift/cryptshift/internal/model/plan"
)

func readInventory(t testing.TB, path string) *inventory.Inventory {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Parse(path, b)
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func stepIDs(p *plan.Plan) []string {
	var ids []string
	for _, s := range p.Steps {
		ids = append(ids, s.ID)
	}
	return ids
}

// An inventory of a host where the layout is already in place plans to
// zero steps. The fixture was written by hand from the layout's geometry
// (1 MiB alignment, pe_start 1 MiB, 4 MiB extents); only its UUIDs are the
// ones cryptshift derives, as on a host cryptshift set up.
func TestIdempotentOnAppliedLayout(t *testing.T) {
	f, _ := loadExample(t, "minimal")
	inv := readInventory(t, "../../testdata/inventories/minimal-applied.json")
	p, rep, err := Plan(f, inv, Options{})
	if err != nil {
		t.Fatalf("plan: %v\n%v", err, rep.Problems)
	}
	if len(p.Steps) != 0 {
		t.Fatalf("got %d steps on an applied layout, want 0: %v", len(p.Steps), stepIDs(p))
	}
	// The entries still describe the system, with the UUIDs found on it.
	if got := p.Crypttab[0].Device; got != "UUID=00d88bfd-b2b5-49b5-8342-e19f8b6cb674" {
		t.Errorf("root crypttab device: got %q, want the existing header's UUID", got)
	}
}

// Each part of the applied state that goes missing brings back exactly the
// steps that recreate it, and nothing destructive.
func TestReplanAfterPartialChange(t *testing.T) {
	f, _ := loadExample(t, "minimal")
	tests := []struct {
		name  string
		edit  func(inv *inventory.Inventory)
		steps []string
	}{
		{"swap off", func(inv *inventory.Inventory) { inv.Swaps = nil },
			[]string{"swapon:/dev/mapper/swap_crypt"}},
		{"after reboot: mappings closed, nothing mounted", func(inv *inventory.Inventory) {
			var keep []inventory.Device
			for _, d := range inv.Devices {
				if d.Kind != inventory.KindCrypt {
					keep = append(keep, d)
				}
			}
			inv.Devices, inv.Mounts, inv.Swaps = keep, nil, nil
		}, []string{"open:/dev/mapper/root_crypt", "mount:/target", "openPlain:/dev/mapper/swap_crypt",
			"mkswap:/dev/mapper/swap_crypt", "mount:/target/boot", "mount:/target/boot/efi", "swapon:/dev/mapper/swap_crypt"}},
		{"after reboot, target root unreadable", func(inv *inventory.Inventory) {
			var keep []inventory.Device
			for _, d := range inv.Devices {
				if d.Kind != inventory.KindCrypt {
					keep = append(keep, d)
				}
			}
			inv.Devices, inv.Mounts, inv.Swaps, inv.Target = keep, nil, nil, nil
		}, []string{"open:/dev/mapper/root_crypt", "mount:/target", "openPlain:/dev/mapper/swap_crypt",
			"mkswap:/dev/mapper/swap_crypt",
			// header backups cannot be seen on a closed root; apply finds them there
			"mkdir:/target/root/luks-header-backups", "luksHeaderBackup:/target/root/luks-header-backups/root_crypt.luksheader",
			"mount:/target/boot", "mount:/target/boot/efi", "swapon:/dev/mapper/swap_crypt",
			"writeCrypttab:/target/etc/crypttab", "writeFstab:/target/etc/fstab", "initramfs:/target"}},
		{"fstab edited away", func(inv *inventory.Inventory) { inv.Target.Fstab = "" },
			[]string{"writeFstab:/target/etc/fstab"}},
		{"crypttab edited away", func(inv *inventory.Inventory) { inv.Target.Crypttab = "" },
			[]string{"writeCrypttab:/target/etc/crypttab", "initramfs:/target"}},
		{"recovery keyslot removed", func(inv *inventory.Inventory) {
			d := inv.Device("/dev/vg0/root")
			d.Content.LUKS.Keyslots = d.Content.LUKS.Keyslots[:1]
		}, []string{"addRecoveryKey:/dev/vg0/root"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv := readInventory(t, "../../testdata/inventories/minimal-applied.json")
			tt.edit(inv)
			p, rep, err := Plan(f, inv, Options{})
			if err != nil {
				t.Fatalf("plan: %v\n%v", err, rep.Problems)
			}
			if got := strings.Join(stepIDs(p), " "); got != strings.Join(tt.steps, " ") {
				t.Errorf("got steps  %s\nwant steps %s", got, strings.Join(tt.steps, " "))
			}
			if len(p.Destructive()) != 0 {
				t.Errorf("got destructive steps %v", p.Destructive())
			}
		})
	}
}

func withContent(t *testing.T, inv *inventory.Inventory, dev string, c *inventory.Content) {
	t.Helper()
	d := inv.Device(dev)
	if d == nil {
		t.Fatalf("no device %s", dev)
	}
	d.Content = c
}

// A disk the layout reuses that holds a filesystem is refused without
// --allow-destroy, and the refusal names the device and what is on it.
func TestRefusesToDestroy(t *testing.T) {
	f, inv := loadExample(t, "mail-host")
	withContent(t, inv, "/dev/sdb", &inventory.Content{Type: "ext4", UUID: "0e3c9c1a-2c44-4f3a-9a51-6f1c52f0e001", Label: "old-mail"})
	p, _, err := Plan(f, inv, Options{})
	var refused *RefusedError
	if !errors.As(err, &refused) {
		t.Fatalf("got %v, want a refusal", err)
	}
	msg := err.Error()
	for _, want := range []string{"/dev/sdb", "ext4 filesystem", "0e3c9c1a-2c44-4f3a-9a51-6f1c52f0e001", `"old-mail"`, "--allow-destroy"} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal %q does not mention %q", msg, want)
		}
	}
	if len(refused.Steps) != 1 || refused.Steps[0].ID != "wipe:/dev/sdb" {
		t.Errorf("got refused steps %v, want wipe:/dev/sdb", refused.Steps)
	}
	if p == nil || p.Step("pvcreate:/dev/sdb") == nil {
		t.Fatal("the refused plan should still show the pvcreate it would do")
	}

	p, _, err = Plan(f, inv, Options{AllowDestroy: true})
	if err != nil {
		t.Fatalf("with AllowDestroy: %v", err)
	}
	w := p.Step("wipe:/dev/sdb")
	if w == nil || !w.Destructive || strings.Join(w.Command, " ") != "wipefs --all /dev/sdb" {
		t.Fatalf("got wipe step %+v", w)
	}
	if !p.AllowDestroy {
		t.Error("the plan does not record --allow-destroy")
	}
}

// Devices in use are not something --allow-destroy can override.
func TestInUseIsAnError(t *testing.T) {
	f, inv := loadExample(t, "mail-host")
	withContent(t, inv, "/dev/sdb", &inventory.Content{Type: "ext4", UUID: "u"})
	inv.Mounts = append(inv.Mounts, inventory.Mount{Source: "/dev/sdb", Target: "/srv/old", FSType: "ext4"})
	_, rep, err := Plan(f, inv, Options{AllowDestroy: true})
	if err == nil {
		t.Fatal("a mounted disk was planned for wiping")
	}
	got := fmt.Sprint(rep.Errors())
	if !strings.Contains(got, "/dev/sdb is mounted at /srv/old") || !strings.Contains(got, "$.disks[1]") {
		t.Errorf("got %s", got)
	}
}

// A LUKS header with other parameters than planned is destructive to
// replace, and says why.
func TestMismatchedHeaderIsDestructive(t *testing.T) {
	f, _ := loadExample(t, "minimal")
	inv := readInventory(t, "../../testdata/inventories/minimal-applied.json")
	inv.Device("/dev/vg0/root").Content.LUKS.SectorSize = 512
	// the mapping is open: that is in use, so close it first
	var keep []inventory.Device
	for _, d := range inv.Devices {
		if d.Kind != inventory.KindCrypt {
			keep = append(keep, d)
		}
	}
	inv.Devices, inv.Mounts, inv.Swaps = keep, nil, nil
	_, _, err := Plan(f, inv, Options{})
	var refused *RefusedError
	if !errors.As(err, &refused) {
		t.Fatalf("got %v, want a refusal", err)
	}
	if !strings.Contains(err.Error(), "512-byte sectors, not 4096") {
		t.Errorf("refusal does not say why: %v", err)
	}
}

// Shrinking a volume is destructive (recreate), growing is not.
func TestResize(t *testing.T) {
	f, _ := loadExample(t, "minimal")
	for _, tt := range []struct {
		name        string
		rootExtents int64
		want        string
		destructive bool
	}{
		{"grow", 8000, "lvextend:/dev/vg0/root", false},
		{"shrink", 8100, "lvremove:/dev/vg0/root", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			inv := readInventory(t, "../../testdata/inventories/minimal-applied.json")
			ext := int64(4 << 20)
			inv.LV("vg0", "root").Size = tt.rootExtents * ext
			inv.VGs[0].FreeCount = 10047 - tt.rootExtents - 512
			if tt.destructive { // a volume in use cannot be removed: unmount first
				inv.Mounts, inv.Swaps = nil, nil
				var keep []inventory.Device
				for _, d := range inv.Devices {
					if d.Kind != inventory.KindCrypt {
						keep = append(keep, d)
					}
				}
				inv.Devices = keep
			}
			p, rep, err := Plan(f, inv, Options{AllowDestroy: true})
			if err != nil {
				t.Fatalf("%v %v", err, rep.Problems)
			}
			s := p.Step(tt.want)
			if s == nil || s.Destructive != tt.destructive {
				t.Fatalf("got steps %v, want %s (destructive %v)", stepIDs(p), tt.want, tt.destructive)
			}
		})
	}
}

// Secrets are referenced by name only: no step argument is a secret, and
// every step that reads the passphrase reads it on stdin.
func TestSecretsOnlyByReference(t *testing.T) {
	f, inv := loadExample(t, "mail-host")
	p, _, err := Plan(f, inv, Options{})
	if err != nil {
		t.Fatal(err)
	}
	reads := 0
	for _, s := range p.Steps {
		for _, r := range s.Secrets {
			reads++
			switch {
			case r.Secret == plan.SecretPassphrase && r.FD != 0, r.Secret == plan.SecretRecoveryKey && r.FD != 3:
				t.Errorf("%s reads %s on fd %d", s.ID, r.Secret, r.FD)
			}
		}
		if s.Action == plan.ActLUKSFormat || s.Action == plan.ActOpen {
			if !strings.Contains(strings.Join(s.Command, " "), "--key-file") {
				t.Errorf("%s has no --key-file: it would prompt", s.ID)
			}
		}
	}
	if reads == 0 {
		t.Fatal("no step reads a secret")
	}
}

func BenchmarkPlan200Volumes(b *testing.B) {
	var y strings.Builder
	y.WriteString("apiVersion: cryptshift/v1\nkind: Layout\nname: big\ndisks:\n")
	for i := 0; i < 4; i++ {
		fmt.Fprintf(&y, "  - name: d%d\n    device: /dev/sd%c\n", i, 'a'+i)
	}
	y.WriteString("volumeGroups:\n  - name: vg0\nvolumes:\n  - name: root\n    size: 20GiB\n    mount: /\n")
	for i := 1; i < 200; i++ {
		fmt.Fprintf(&y, "  - name: lv%03d\n    size: 10GiB\n", i)
		if i%2 == 0 {
			fmt.Fprintf(&y, "    mount: /srv/v%03d\n", i)
		} else {
			fmt.Fprintf(&y, "    guest: {domain: g%03d}\n", i)
		}
	}
	y.WriteString("keys:\n  headerBackupDir: /root/hdr\n")
	inv := &inventory.Inventory{APIVersion: inventory.APIVersion, Kind: inventory.Kind}
	for i := 0; i < 4; i++ {
		inv.Devices = append(inv.Devices, inventory.Device{Path: fmt.Sprintf("/dev/sd%c", 'a'+i), Kind: "disk", Size: 2 << 40, LogicalSectorSize: 512})
	}
	data := []byte(y.String())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, rep := layout.Parse("big.yaml", data)
		if rep.HasErrors() {
			b.Fatal(rep.Error())
		}
		p, _, err := Plan(f, inv, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if len(p.Steps) < 1000 {
			b.Fatalf("got %d steps", len(p.Steps))
		}
	}
}

// A plan names each disk by what the inventory knew of it (size, serial,
// WWID, by-id links), so apply can refuse another disk under the name.
func TestDiskIDsCarrySerialAndWWID(t *testing.T) {
	f, inv := loadExample(t, "mail-host")
	for i := range inv.Devices {
		if inv.Devices[i].Path == "/dev/sdb" {
			inv.Devices[i].Serial = "WD-111"
			inv.Devices[i].WWID = "naa.5000c500a1b2c3d4"
		}
	}
	p, rep, err := Plan(f, inv, Options{})
	if err != nil {
		t.Fatalf("plan: %v\n%v", err, rep.Problems)
	}
	found := false
	for name, dev := range p.Devices {
		if dev != "/dev/sdb" {
			continue
		}
		found = true
		if id := p.DiskIDs[name]; id.Serial != "WD-111" || id.WWID != "naa.5000c500a1b2c3d4" {
			t.Errorf("disk %s: got %+v, want serial WD-111 and WWID naa.5000c500a1b2c3d4", name, id)
		}
	}
	if !found {
		t.Fatalf("no planned disk is /dev/sdb: %v", p.Devices)
	}
}

// A disk in a hand-written inventory (or one from an older cryptshift)
// that shows no signature and no "blank" was taken for blank and
// partitioned without --allow-destroy; like an LV, it now has to be
// shown probed and blank, else the plan is refused.
func TestUnprobedDiskIsNotBlank(t *testing.T) {
	f, inv := loadExample(t, "mail-host")
	inv.Device("/dev/sdb").Blank = ""
	_, _, err := Plan(f, inv, Options{})
	var refused *RefusedError
	if !errors.As(err, &refused) {
		t.Fatalf("got %v, want a refusal", err)
	}
	for _, want := range []string{"/dev/sdb", "the inventory does not show that it was probed and found blank; re-run cryptshift inventory", "--allow-destroy"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not mention %q", err, want)
		}
	}
	p, _, err := Plan(f, inv, Options{AllowDestroy: true})
	if err != nil {
		t.Fatalf("with AllowDestroy: %v", err)
	}
	if w := p.Step("wipe:/dev/sdb"); w == nil || !w.Destructive {
		t.Fatalf("got wipe step %+v, want a destructive wipe of /dev/sdb", w)
	}
	// The same disk probed blank plans without the flag.
	inv.Device("/dev/sdb").Blank = "first and last MiB"
	if _, _, err := Plan(f, inv, Options{}); err != nil {
		t.Fatalf("probed blank: %v", err)
	}
}
