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

// The plan names every unlock method keys.unlock asks for, and where it is
// set up, with no secret in it.
func TestPlanNotesUnlockMethods(t *testing.T) {
	p, err := planUnlock(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	notes := strings.Join(p.Notes, "\n")
	for _, want := range []string{
		"unlock over SSH: cryptshift migrate-host puts dropbear into the new system's initramfs with 1 authorized key(s), ip=dhcp",
		"unlock by Tang: apply binds the root to http://tang.internal:7500 (thumbprint voU6475c-6TIakg7U7LoBHrS9ESNwU98S-1Gr2IDA2k)",
		"unlock by TPM2: apply binds the root to the TPM (clevis tpm2 pin, PCRs 7); without a PIN",
		"the passphrase and recovery keyslots stay",
		"the inventory does not say whether this host has a TPM 2.0 (made by an older cryptshift): apply checks for one before it changes anything",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("the plan's notes lack %q:\n%s", want, notes)
		}
	}
}

// planUnlock plans the mail-host example with every unlock method, on
// its inventory with tpm2 set as given (nil: an old inventory).
func planUnlock(t *testing.T, tpm2 *bool) (*plan.Plan, error) {
	t.Helper()
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
	inv.TPM2 = tpm2
	p, rep, err := Plan(f, inv, Options{AllowDestroy: true})
	if err == nil && rep.HasErrors() {
		err = errors.New(rep.Error())
	}
	return p, err
}

// The root's bindings are plan steps after its passphrase (keyslot 0)
// and recovery key (keyslot 1): tang on keyslot 2, tpm2 on 3, each
// undone by unbinding its keyslot, the passphrase named on stdin and
// nowhere in the plan.
func TestPlanBindsTheRoot(t *testing.T) {
	yes := true
	p, err := planUnlock(t, &yes)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	last := ""
	for _, s := range p.Steps {
		if s.Action == plan.ActAddRecovery && s.Target == "/dev/vg0/root" {
			last = s.ID
		}
		if s.Action != plan.ActClevisBind {
			continue
		}
		if last == "" {
			t.Errorf("%s comes before the root's recovery keyslot", s.ID)
		}
		got = append(got, s.ID+" | "+strings.Join(s.Command, " ")+" | "+strings.Join(s.Undo, " ")+" | "+fmt.Sprint(s.Secrets))
	}
	want := []string{
		`clevisBind:/dev/vg0/root:2 | clevis luks bind -y -d /dev/vg0/root -s 2 -k - tang {"thp":"voU6475c-6TIakg7U7LoBHrS9ESNwU98S-1Gr2IDA2k","url":"http://tang.internal:7500"} | clevis luks unbind -f -d /dev/vg0/root -s 2 | [{0 passphrase}]`,
		`clevisBind:/dev/vg0/root:3 | clevis luks bind -y -d /dev/vg0/root -s 3 -k - tpm2 {"pcr_bank":"sha256","pcr_ids":"7"} | clevis luks unbind -f -d /dev/vg0/root -s 3 | [{0 passphrase}]`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("binding steps:\ngot  %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	if strings.Contains(strings.Join(p.Notes, "\n"), "TPM 2.0") {
		t.Errorf("the inventory says there is a TPM, yet the plan notes it as unknown")
	}
}

// An inventory that found no TPM 2.0 refuses a tpm2 binding at plan
// time, at the layout's keys.unlock.tpm2, with the fix.
func TestPlanRefusesTPM2WithoutATPM(t *testing.T) {
	no := false
	_, err := planUnlock(t, &no)
	if err == nil {
		t.Fatal("a tpm2 binding on a host without a TPM was planned")
	}
	for _, want := range []string{"keys.unlock.tpm2", "this host has no TPM 2.0 (the inventory found none in /sys/class/tpm)", "enable the TPM 2.0 in the firmware"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q:\n%v", want, err)
		}
	}
}
