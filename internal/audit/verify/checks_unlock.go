package verify

import (
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"github.com/cryptshift/cryptshift/luks"
)

// keys.unlock: how each LUKS volume is unlocked, from its real header (the
// keyslots and the LUKS2 tokens: Clevis pins, systemd-tpm2/fido2) and from
// crypttab (key file), plus SSH unlock in the initramfs. An auditor needs
// the combinations that weaken or endanger the protection: a TPM2 binding
// without PIN unlocks a stolen machine by itself; a Tang server on this
// host unlocks it for whoever holds it; no recovery keyslot loses the data
// when the TPM or Tang fails; a single keyslot loses it with one secret.
func (e *env) checkUnlock(d *blockstack.Device, subj string, h *luks.Header, vol *Volume) {
	const id = "keys.unlock"
	var ev []string
	st, finding := Pass, ""
	warn := func(kind, msg string) {
		st, finding = Warn, kind
		ev = append(ev, msg)
	}
	bound := map[int]bool{}
	var lines []string
	for _, t := range h.TokenInfo {
		for _, k := range t.Keyslots {
			bound[k] = true
		}
		desc := t.Type
		switch {
		case t.Clevis != nil:
			desc = "clevis " + t.Clevis.String()
			t.Clevis.Walk(func(p luks.ClevisPin) {
				if p.Pin == "tpm2" {
					warn(FindingConfig, e.t("ev.unlock.tpm2nopin", "clevis "+p.String()))
				}
				for _, u := range p.URLs {
					if why, self := e.selfURL(u); self {
						warn(FindingKeys, e.t("ev.unlock.tangself", u, why))
					}
				}
			})
		case t.TPM2 != nil:
			desc = fmt.Sprintf("systemd-tpm2 (pcrs %v %s, pin %s)", t.TPM2.PCRs, t.TPM2.Bank, yesNo(e.lang, t.TPM2.PIN))
			if !t.TPM2.PIN {
				warn(FindingConfig, e.t("ev.unlock.tpm2nopin", "systemd-tpm2"))
			}
		}
		lines = append(lines, fmt.Sprintf("Token %d %s → Keyslot %v", t.ID, desc, t.Keyslots))
	}
	free := 0
	var freeIDs []string
	for _, k := range h.Keyslots {
		if !bound[k.ID] {
			free++
			freeIDs = append(freeIDs, fmt.Sprint(k.ID))
		}
	}
	which := e.t("ev.unlock.slotlist.none")
	if free > 0 {
		which = e.tn("ev.unlock.slotlist", free, strings.Join(freeIDs, ", "))
	}
	lines = append([]string{e.tn("ev.unlock.slots", len(h.Keyslots), free, which)}, lines...)
	for _, c := range e.crypttab {
		if c.Name != d.DMName {
			continue
		}
		switch {
		case c.RandomKey():
		case c.KeyFile != "":
			loc := e.locate(c.KeyFile)
			lines = append(lines, e.t("ev.unlock.keyfile", c.KeyFile, e.t("class."+string(loc.Class))))
		default:
			lines = append(lines, e.t("ev.unlock.passphrase"))
			if ssh := e.sshUnlock(); ssh != "" {
				lines = append(lines, ssh)
			}
		}
	}
	// The routine unlock uses a token, or else one free keyslot (the key
	// file's or the passphrase's); a recovery keyslot is one more free slot.
	routine := 1
	if len(h.TokenInfo) > 0 {
		routine = 0
	}
	switch {
	case len(h.Keyslots) == 1:
		warn(FindingConfig, e.t("ev.unlock.single"))
	case free-routine < 1:
		warn(FindingConfig, e.t("ev.unlock.norecovery"))
	default:
		lines = append(lines, e.t("ev.unlock.recovery"))
	}
	vol.Unlock = lines
	e.addKind(id, id+".fix", st, finding, subj, append(append([]string{}, lines...), ev...)...)
}

// tn picks a singular or plural text for n (the key's ".one" or ".other").
func (e *env) tn(key string, n int, args ...any) string { return plural(e.lang, key, n, args...) }

// selfURL reports whether a Tang URL points at this host: localhost, a
// loopback address, this host's name, a name /etc/hosts maps to a
// loopback address, or (on the live system) one of its own addresses.
func (e *env) selfURL(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" {
		return "", false
	}
	h := strings.ToLower(u.Hostname())
	host, _ := e.hostInfo()
	switch {
	case h == "localhost" || strings.HasSuffix(h, ".localhost"):
		return "localhost", true
	case host != "" && (h == strings.ToLower(host) || strings.HasPrefix(h, strings.ToLower(host)+".")):
		return e.t("ev.unlock.ownname", host), true
	}
	addrs := []string{h}
	if s, ok := e.read("/etc/hosts"); ok {
		for _, l := range strings.Split(s, "\n") {
			f := strings.Fields(strings.SplitN(l, "#", 2)[0])
			for _, n := range f[min(1, len(f)):] {
				if strings.EqualFold(n, h) {
					addrs = append(addrs, f[0])
				}
			}
		}
	}
	for _, a := range addrs {
		ip := net.ParseIP(a)
		if ip == nil {
			continue
		}
		if ip.IsLoopback() || ip.IsUnspecified() {
			return a, true
		}
		if e.live {
			if own, _ := net.InterfaceAddrs(); own != nil {
				for _, o := range own {
					if n, ok := o.(*net.IPNet); ok && n.IP.Equal(ip) {
						return e.t("ev.unlock.ownaddr", a), true
					}
				}
			}
		}
	}
	return "", false
}

// sshUnlock says whether the initramfs offers SSH unlock (Debian's
// dropbear-initramfs: authorized keys in /etc/dropbear/initramfs, dropbear
// inside the initramfs), or "".
func (e *env) sshUnlock() string {
	keys := ""
	for _, p := range []string{"/etc/dropbear/initramfs/authorized_keys", "/etc/dropbear-initramfs/authorized_keys"} {
		if e.exists(p) {
			keys = p
		}
	}
	if keys == "" {
		return ""
	}
	for _, img := range e.initramfsImages() {
		members, err := e.initramfsMembers(img)
		if err != nil {
			continue
		}
		for _, m := range members {
			if m.Name == "usr/sbin/dropbear" || m.Name == "sbin/dropbear" {
				return e.t("ev.unlock.ssh", keys, img)
			}
		}
	}
	return e.t("ev.unlock.sshconf", keys)
}
