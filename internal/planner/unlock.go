package planner

import (
	"fmt"

	"github.com/cryptshift/cryptshift/internal/doors/clevis"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/luks"
)

// LUKS2 has 32 keyslots (cryptsetup's LUKS2_KEYSLOTS_MAX).
const luks2Keyslots = 32

// planBindings adds the layout's Clevis bindings of the root volume
// (keys.unlock.tang, keys.unlock.tpm2) as steps after its passphrase and
// recovery keyslots: each binds a keyslot the plan names, so its undo
// (clevis luks unbind of that keyslot) is rendered with it. The
// passphrase reaches clevis on stdin; the plan holds no secret. A binding
// an existing volume already has is kept, not made again.
func (p *planner) planBindings(st *volState, recovery bool) {
	u := p.l.Keys.Unlock
	if u == nil || (len(u.Tang) == 0 && u.TPM2 == nil) {
		return
	}
	var pins []clevis.Pin
	for _, t := range u.Tang {
		pins = append(pins, clevis.Tang(t.URL, t.Thumbprint))
	}
	if t := u.TPM2; t != nil && p.checkTPM() {
		pcrs, bank := t.PCRs, t.PCRBank
		if pcrs == "" {
			pcrs = "7"
		}
		if bank == "" {
			bank = "sha256"
		}
		pins = append(pins, clevis.TPM2(bank, pcrs))
	}
	used := map[int]bool{0: true} // luksFormat's passphrase
	var existing *luks.Header
	if !st.format && st.dev != nil && st.dev.Content != nil && st.dev.Content.LUKS != nil {
		existing = st.dev.Content.LUKS
		used = map[int]bool{}
		for _, k := range existing.Keyslots {
			used[k.ID] = true
		}
	}
	free := func() int {
		for i := range luks2Keyslots {
			if !used[i] {
				used[i] = true
				return i
			}
		}
		return -1
	}
	if recovery {
		free() // cryptsetup luksAddKey takes the lowest free keyslot
	}
	for _, pin := range pins {
		if existing != nil && len(clevis.Bound(existing, pin)) > 0 {
			p.note("%s is already bound to %s: kept as it is", st.lvPath, pin)
			continue
		}
		slot := free()
		if slot < 0 {
			p.rep.Errorf(st.lp+".encryption", "remove unused keyslots (cryptsetup luksKillSlot) first",
				"%s has no free keyslot for the %s binding", st.lvPath, pin)
			return
		}
		p.add(plan.Step{
			ID:     fmt.Sprintf("%s:%s:%d", plan.ActClevisBind, st.lvPath, slot),
			Action: plan.ActClevisBind, Target: st.lvPath,
			Description: fmt.Sprintf("bind keyslot %d of %s to %s with Clevis (a LUKS2 token holding the keyslot's key encrypted to the pin; the passphrase and recovery keyslots stay)",
				slot, st.lvPath, pin),
		}, &plan.Params{ClevisBind: &clevis.Bind{Device: st.lvPath, Pin: pin, Slot: slot}},
			&plan.Params{ClevisUnbind: &clevis.Unbind{Device: st.lvPath, Slot: slot}})
	}
}

// checkTPM refuses a tpm2 binding on a host whose inventory found no TPM
// 2.0, and says so when the inventory does not tell (made before it was
// recorded): apply then checks before it changes anything.
func (p *planner) checkTPM() bool {
	switch {
	case p.inv.TPM2 == nil:
		p.note("the inventory does not say whether this host has a TPM 2.0 (made by an older cryptshift): apply checks for one before it changes anything")
	case !*p.inv.TPM2:
		p.rep.Errorf("$.keys.unlock.tpm2", "enable the TPM 2.0 in the firmware and take the inventory again, or remove keys.unlock.tpm2 and unlock by tang or passphrase",
			"this host has no TPM 2.0 (the inventory found none in /sys/class/tpm)")
		return false
	}
	return true
}
