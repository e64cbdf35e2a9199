// Package unlock adds an unlock method (Tang, TPM2) to an existing LUKS2
// volume and removes one, through the one Clevis door, without rewriting
// the volume: a keyslot and its token are added or removed, the
// passphrase and recovery keyslots always stay.
package unlock

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/cryptshift/cryptshift/internal/doors/clevis"
	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
	"github.com/cryptshift/cryptshift/internal/model/inventory"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/luks"
)

// Methods.
const (
	Tang = "tang"
	TPM2 = "tpm2"
)

// Options say which volume gets or loses which method.
type Options struct {
	// Volume is a dm-crypt mapping name (root_crypt) or a LUKS2 device path.
	Volume string
	Method string // tang or tpm2
	// Tang: the server and its pinned S256 thumbprint.
	URL, Thumbprint string
	// TPM2: the PCR policy (default bank sha256, PCR 7).
	PCRBank, PCRs string
	// Passphrase is a key that opens the volume now (add only).
	Passphrase []byte
	DryRun     bool

	Run  execx.Runner
	HTTP *http.Client
	// SysRoot is where /sys is read for the TPM ("/" live).
	SysRoot string
	// ReadHeader reads the volume's LUKS header (default luks.ReadHeader).
	ReadHeader func(dev string) (*luks.Header, error)
}

// Result is what was (or, with DryRun, would be) done.
type Result struct {
	Device string
	Steps  []plan.Step
}

var pcrList = regexp.MustCompile(`^([0-9]|1[0-9]|2[0-3])(,([0-9]|1[0-9]|2[0-3]))*$`)

func (o *Options) normalize() error {
	if o.Run == nil {
		o.Run = execx.Exec{}
	}
	if o.SysRoot == "" {
		o.SysRoot = "/"
	}
	if o.ReadHeader == nil {
		o.ReadHeader = luks.ReadHeader
	}
	switch o.Method {
	case Tang:
	case TPM2:
		if o.PCRBank == "" {
			o.PCRBank = "sha256"
		}
		if o.PCRs == "" {
			o.PCRs = "7"
		}
		if !pcrList.MatchString(o.PCRs) {
			return fmt.Errorf("cannot use PCRs %q: give PCR numbers 0-23 separated by commas, e.g. 7", o.PCRs)
		}
		if o.PCRBank != "sha256" && o.PCRBank != "sha1" {
			return fmt.Errorf("cannot use PCR bank %q: use sha256 (or sha1 on old TPMs)", o.PCRBank)
		}
	default:
		return fmt.Errorf("cannot handle unlock method %q: use tang or tpm2", o.Method)
	}
	if o.Volume == "" {
		return errors.New("cannot change unlock methods: name the volume (its mapping, e.g. root_crypt, or its LUKS device)")
	}
	return nil
}

// device resolves a mapping name to its LUKS device (cryptsetup status).
func (o *Options) device(ctx context.Context) (string, error) {
	if strings.HasPrefix(o.Volume, "/") {
		return o.Volume, nil
	}
	res, err := o.Run.Run(ctx, execx.Cmd{Tool: "cryptsetup", Args: []string{"status", o.Volume}})
	if err != nil {
		return "", fmt.Errorf("cannot find volume %s: %w; name an open mapping (dmsetup ls --target crypt) or the LUKS device", o.Volume, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(res.Stdout))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "device:" {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("cannot find the device under %s in cryptsetup status", o.Volume)
}

// volume checks the options and reads the volume's device and header.
func (o *Options) volume(ctx context.Context) (string, *luks.Header, error) {
	if err := o.normalize(); err != nil {
		return "", nil, err
	}
	dev, err := o.device(ctx)
	if err != nil {
		return "", nil, err
	}
	h, err := o.ReadHeader(dev)
	if err != nil {
		return "", nil, fmt.Errorf("cannot read the LUKS header of %s: %w", dev, err)
	}
	return dev, h, nil
}

// Pin is the Clevis pin the options name.
func (o Options) Pin() clevis.Pin {
	if o.Method == TPM2 {
		return clevis.TPM2(o.PCRBank, o.PCRs)
	}
	return clevis.Tang(o.URL, o.Thumbprint)
}

// Preflight checks, before anything is bound, what the pin needs on this
// machine now: a Tang server that answers with the pinned thumbprint, or
// a TPM 2.0 (read below sysRoot, "/" live). An unreachable server, a
// mismatch or a missing TPM is an error and nothing is changed.
func Preflight(ctx context.Context, client *http.Client, sysRoot string, pin clevis.Pin) error {
	switch pin.Name {
	case Tang:
		url, _ := pin.Config["url"].(string)
		thp, _ := pin.Config["thp"].(string)
		if url == "" || thp == "" {
			return errors.New("cannot bind tang: give the server's --url and its pinned --thumbprint (tang-show-keys on the server)")
		}
		return clevis.CheckTang(ctx, client, url, thp)
	case TPM2:
		if ok, why := inventory.HasTPM2(rootfs.Dir(sysRoot)); !ok {
			return fmt.Errorf("cannot bind tpm2: this machine has no TPM 2.0 (%s); enable it in the firmware or unlock by tang, nothing was changed", why)
		}
	}
	return nil
}

// Add binds the method to a new keyslot of the volume. Everything that
// can be checked first is: the volume is LUKS2, a Tang server is
// reachable and advertises the pinned thumbprint, a TPM is present.
func Add(ctx context.Context, o Options) (*Result, error) {
	dev, h, err := o.volume(ctx)
	if err != nil {
		return nil, err
	}
	if h.Version != 2 {
		return nil, fmt.Errorf("cannot bind %s to %s: it is LUKS%d; Clevis tokens need LUKS2", o.Method, dev, h.Version)
	}
	pin := o.Pin()
	if err := Preflight(ctx, o.HTTP, o.SysRoot, pin); err != nil {
		return nil, err
	}
	b := clevis.Bind{Device: dev, Pin: pin}
	step := plan.Step{ID: "bind-" + o.Method, Action: "clevisBind", Target: dev,
		Description: fmt.Sprintf("add a keyslot to %s that %s unlocks (a Clevis LUKS2 token; the passphrase and recovery keyslots stay)", dev, pin),
		Command:     b.Cmd(nil).Argv(), Secrets: []plan.SecretRef{{FD: 0, Secret: plan.SecretPassphrase}}}
	res := &Result{Device: dev, Steps: []plan.Step{step}}
	if o.DryRun {
		return res, nil
	}
	if len(o.Passphrase) == 0 {
		return nil, errors.New("cannot bind: a passphrase that opens the volume is needed (--passphrase-file)")
	}
	if _, err := o.Run.Run(ctx, b.Cmd(o.Passphrase)); err != nil {
		return nil, fmt.Errorf("cannot bind %s to %s: %w", pin, dev, err)
	}
	return res, nil
}

// Remove unbinds every Clevis binding of the method from the volume,
// refusing when no keyslot other than Clevis's would remain.
func Remove(ctx context.Context, o Options) (*Result, error) {
	dev, h, err := o.volume(ctx)
	if err != nil {
		return nil, err
	}
	clevisSlots := map[int]bool{}
	var remove []int
	for _, t := range h.TokenInfo {
		if t.Clevis == nil {
			continue
		}
		for _, s := range t.Keyslots {
			clevisSlots[s] = true
		}
		uses := false
		t.Clevis.Walk(func(p luks.ClevisPin) {
			if p.Pin == o.Method {
				uses = true
			}
		})
		if uses {
			remove = append(remove, t.Keyslots...)
		}
	}
	if len(remove) == 0 {
		return nil, fmt.Errorf("cannot remove %s from %s: it has no %s binding; nothing was changed", o.Method, dev, o.Method)
	}
	others := 0
	for _, k := range h.Keyslots {
		if !clevisSlots[k.ID] {
			others++
		}
	}
	if others == 0 {
		return nil, fmt.Errorf("cannot remove %s from %s: no passphrase keyslot would remain; add one first (cryptsetup luksAddKey), nothing was changed", o.Method, dev)
	}
	res := &Result{Device: dev}
	var cmds []execx.Cmd
	for _, s := range remove {
		u := clevis.Unbind{Device: dev, Slot: s}
		cmds = append(cmds, u.Cmd())
		res.Steps = append(res.Steps, plan.Step{ID: fmt.Sprintf("unbind-%s-%d", o.Method, s), Action: "clevisUnbind", Target: dev,
			Description: fmt.Sprintf("remove the %s binding in keyslot %d of %s (its token and keyslot; other keyslots stay)", o.Method, s, dev),
			Command:     u.Cmd().Argv()})
	}
	if o.DryRun {
		return res, nil
	}
	for _, c := range cmds {
		if _, err := o.Run.Run(ctx, c); err != nil {
			return nil, fmt.Errorf("cannot remove %s from %s: %w", o.Method, dev, err)
		}
	}
	return res, nil
}
