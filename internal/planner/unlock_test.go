package planner

import (
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/model/inventory"
	"github.com/cryptshift/cryptshift/internal/model/layout"
	"github.com/cryptshift/cryptshift/playbooks"
)

// The plan names every unlock method keys.unlock asks for, and where it is
// set up, with no secret in it.
func TestPlanNotesUnlockMethods(t *testing.T) {
	e, err := playbooks.Load("mail-host")
	if err != nil {
		t.Fatal(err)
	}
	y := strings.Replace(string(e.Layout), "\nkeys:\n", `
keys:
  unlock:
    networkModules: [virtio_net]
    ssh: {authorizedKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE admin@laptop"]}
    tang: [{url: "http://tang.internal:7500", thumbprint: voU6475c-6TIakg7U7LoBHrS9ESNwU98S-1Gr2IDA2k}]
    tpm2: {pcrs: "7"}
`, 1)
	f, rep := layout.Parse("mail-host.yaml", []byte(y))
	if rep.HasErrors() {
		t.Fatal(rep)
	}
	inv, err := inventory.Parse("mail-host.inventory.json", e.Inventory)
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := Plan(f, inv, Options{AllowDestroy: true})
	if err != nil {
		t.Fatal(err)
	}
	notes := strings.Join(p.Notes, "\n")
	for _, want := range []string{
		"unlock over SSH: cryptshift migrate-host puts dropbear into the new system's initramfs with 1 authorized key(s), ip=dhcp",
		"unlock by Tang: cryptshift migrate-host binds the root to http://tang.internal:7500 (thumbprint voU6475c-6TIakg7U7LoBHrS9ESNwU98S-1Gr2IDA2k)",
		"unlock by TPM2: cryptshift migrate-host binds the root to the TPM (clevis tpm2 pin, PCRs 7); without a PIN",
		"the passphrase and recovery keyslots stay",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("the plan's notes lack %q:\n%s", want, notes)
		}
	}
}
