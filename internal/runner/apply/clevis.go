package apply

import (
	"context"
	"fmt"
	"slices"

	"github.com/cryptshift/cryptshift/internal/doors/clevis"
	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/runner/unlock"
	"github.com/cryptshift/cryptshift/luks"
)

// preflightBindings checks, before the journal is created and anything is
// written, what the plan's Clevis bindings need on this machine: each
// Tang server answers with its pinned thumbprint, a TPM 2.0 is there (the
// plan's inventory may not have said). A failure refuses the whole apply.
func preflightBindings(ctx context.Context, p *plan.Plan, opt Options) error {
	for _, s := range p.Steps {
		b := s.Params.ClevisBind
		if b == nil {
			continue
		}
		if err := unlock.Preflight(ctx, opt.HTTP, opt.sysRoot(), b.Pin); err != nil {
			return exitcode.With(exitcode.Refused, fmt.Errorf("cannot apply step %s: %w", s.ID, err))
		}
	}
	return nil
}

func (o Options) sysRoot() string {
	if o.SysRoot == "" {
		return "/"
	}
	return o.SysRoot
}

// bind runs clevis luks bind with the passphrase on stdin, after checking
// the pin again (a resume may come days later: the Tang server must still
// advertise the pinned key).
func (e *env) bind(ctx context.Context, b clevis.Bind) error {
	if err := unlock.Preflight(ctx, e.opt.HTTP, e.opt.sysRoot(), b.Pin); err != nil {
		return err
	}
	pass, err := e.opt.Secrets.get(plan.SecretPassphrase)
	if err != nil {
		return err
	}
	if _, err := e.opt.Run.Run(ctx, b.Cmd(pass)); err != nil {
		return fmt.Errorf("cannot bind keyslot %d of %s to %s: %w", b.Slot, b.Device, b.Pin, err)
	}
	return nil
}

// bound reports whether keyslot slot of dev carries a Clevis token for
// pin (any pin, when pin is nil), read from the LUKS2 header.
func bound(dev string, slot int, pin *clevis.Pin) (bool, error) {
	h, err := luks.ReadHeader(dev)
	if err != nil {
		return false, err
	}
	if pin != nil {
		return slices.Contains(clevis.Bound(h, *pin), slot), nil
	}
	return h.TokenKeyslots("clevis")[slot], nil
}

// verifyBind checks, in the header and not by clevis's word, that the
// planned keyslot is bound to the pin and that keyslots other than
// Clevis's remain (the passphrase's, the recovery key's).
func verifyBind(b clevis.Bind) error {
	h, err := luks.ReadHeader(b.Device)
	if err != nil {
		return err
	}
	if !slices.Contains(clevis.Bound(h, b.Pin), b.Slot) {
		return fmt.Errorf("clevis reported success, but keyslot %d of %s has no Clevis token for %s", b.Slot, b.Device, b.Pin)
	}
	clevisSlots := h.TokenKeyslots("clevis")
	for _, k := range h.Keyslots {
		if !clevisSlots[k.ID] {
			return nil
		}
	}
	return fmt.Errorf("%s has no keyslot left but Clevis's: the passphrase keyslot is gone", b.Device)
}
