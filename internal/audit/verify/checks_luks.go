package verify

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
	"github.com/cryptshift/cryptshift/luks"
)

// luks.cipher (crypttab): a crypttab entry with cipher=cipher_null sets up
// a mapping that stores every sector as it is, whether or not it is open
// now (cryptsetup accepts it for plain mode).
func checkCrypttabCiphers(e *env) {
	for _, c := range e.crypttab {
		v, ok := c.Option("cipher")
		if !ok || !blockstack.NullCipher(v) {
			continue
		}
		e.addKind("luks.cipher", "luks.cipher.fix.nullplain", Fail, FindingPlaintext, "crypttab "+c.Name,
			e.line("/etc/crypttab", c.Line)+fmt.Sprintf(": %s %s %s %s", c.Name, c.Device, orDash(c.KeyFile), strings.Join(c.Options, ",")), e.t("ev.luks.null"))
	}
}

// Thresholds, with their sources.
const (
	// OWASP Password Storage Cheat Sheet (2023): PBKDF2-HMAC-SHA256 needs
	// 600,000 iterations; far below 10,000 a GPU tests passphrases faster
	// than any policy can keep up with.
	pbkdf2Weak    = 600000
	pbkdf2Broken  = 10000
	argon2MinKiB  = 65536 // 64 MiB; cryptsetup's default is up to 1 GiB (--pbkdf-memory)
	xtsMinKeyBits = 512   // aes-xts with a 512-bit key is AES-256; 256 bits is AES-128
)

// prepare learns, before any check runs, which crypt nodes really encrypt:
// a mapping with cipher_null (in its LUKS header, its captured dm table or
// its crypttab cipher= option) passes data through unencrypted, and the
// block stack must count what sits on it as plaintext.
func (e *env) prepare() {
	if e.sys == nil {
		return
	}
	e.headers = map[string]headerResult{}
	live := map[string]string{}
	if e.live {
		var names []string
		for _, d := range e.sys.CryptNodes() {
			names = append(names, d.DMName)
		}
		if len(names) > 0 {
			live, _ = blockstack.LiveCryptCiphers(names) // without dm access: header and crypttab below
		}
	}
	for _, d := range e.sys.CryptNodes() {
		cipher, src := "", ""
		if c, ok := live[d.DMName]; ok {
			cipher, src = c, e.t("ev.luks.dmtable")
		} else if c, ok := e.manifest.DMCipher(d.DMName); ok {
			cipher, src = c, e.t("ev.luks.dmcaptured")
		} else if d.CryptType() == "LUKS1" || d.CryptType() == "LUKS2" {
			if h, hsrc, err := e.header(d); err == nil {
				cipher, src = h.Cipher, hsrc
			}
		} else {
			for _, c := range e.crypttab {
				if c.Name == d.DMName {
					if v, ok := c.Option("cipher"); ok {
						cipher, src = v, e.line("/etc/crypttab", c.Line)+fmt.Sprintf(": cipher=%s", v)
					}
				}
			}
		}
		if cipher != "" {
			e.sys.SetCipher(d.Name, cipher, src)
		}
	}
}

type headerResult struct {
	h   *luks.Header
	src string
	err error
}

// checkLUKS looks at every crypt node and the header under it.
func checkLUKS(e *env) {
	nodes := e.sys.CryptNodes()
	if len(nodes) == 0 {
		e.na("luks.header", "dm-crypt", e.t("ev.luks.nonodes"))
		return
	}
	for _, d := range nodes {
		e.checkCryptNode(d)
	}
}

func (e *env) cryptEntry(d *blockstack.Device) (string, bool) {
	for _, c := range e.crypttab {
		if c.Name == d.DMName {
			return e.line("/etc/crypttab", c.Line) + fmt.Sprintf(": %s %s %s %s", c.Name, c.Device, orDash(c.KeyFile), strings.Join(c.Options, ",")), true
		}
	}
	return "", false
}

func (e *env) checkCryptNode(d *blockstack.Device) {
	subj := d.DMName + " (" + d.Name + ")"
	vol := Volume{Device: d.Name, Name: d.DMName, Type: d.CryptType(), Discard: d.DiscardMaxBytes > 0}
	if low := d.Lower(); len(low) == 1 {
		if ld := e.sys.Device(low[0]); ld != nil {
			vol.On = ld.Label()
		}
	}
	vol.Protects = e.protects(d)
	if vol.Type == "PLAIN" {
		vol.Header = e.t("ev.luks.plainnoheader")
		vol.Cipher = d.Cipher
		e.volumes = append(e.volumes, vol)
		if blockstack.NullCipher(d.Cipher) {
			e.addKind("luks.cipher", "luks.cipher.fix.nullplain", Fail, FindingPlaintext, subj, d.CipherSource, e.t("ev.luks.null"))
			return
		}
		random := false
		var src string
		for _, c := range e.crypttab {
			if c.Name == d.DMName {
				random = c.RandomKey()
				src = e.line("/etc/crypttab", c.Line) + fmt.Sprintf(": %s %s %s", c.Name, c.Device, orDash(c.KeyFile))
			}
		}
		if random {
			e.volumes[len(e.volumes)-1].Unlock = []string{e.t("ev.unlock.random")}
			e.add("luks.version", Pass, subj, src, e.t("ev.luks.plainrandom"))
		} else {
			e.addFix("luks.version", "luks.version.fix.plain", Warn, subj, e.t("ev.luks.plainpass"))
		}
		return
	}
	h, src, err := e.header(d)
	if err != nil {
		vol.Header = err.Error()
		e.volumes = append(e.volumes, vol)
		e.skip("luks.header", subj, err.Error())
		e.skip("keys.unlock", subj, err.Error())
		return
	}
	vol.Header = src
	vol.Cipher, vol.KeySize, vol.SectorSize = h.Cipher, h.KeySize, h.SectorSize
	vol.Keyslots, vol.Tokens = len(h.Keyslots), h.Tokens
	for _, k := range h.Keyslots {
		vol.KDF = append(vol.KDF, kdfString(k))
	}
	for _, f := range h.Flags {
		if f == "allow-discards" {
			vol.Discard = true
		}
	}
	e.checkUnlock(d, subj, h, &vol)
	e.volumes = append(e.volumes, vol)
	hdr := fmt.Sprintf("%s: LUKS%d %s", src, h.Version, h.UUID)

	// luks.version
	if h.Version == 1 {
		e.add("luks.version", Warn, subj, hdr)
	} else {
		e.add("luks.version", Pass, subj, hdr)
	}

	// luks.cipher
	c := strings.ToLower(h.Cipher)
	cev := e.t("ev.luks.params", h.Cipher, h.KeySize, h.SectorSize)
	switch {
	case blockstack.NullCipher(c) || blockstack.NullCipher(d.Cipher):
		// cipher_null: what cryptsetup reencrypt --encrypt leaves while in
		// progress, or a deliberate no-op: data is stored as it is.
		e.addKind("luks.cipher", "luks.cipher.fix.null", Fail, FindingPlaintext, subj, cev, d.CipherSource+": "+d.Cipher, e.t("ev.luks.null"))
	case strings.HasSuffix(c, "-ecb") || strings.Contains(c, "-ecb-"):
		e.add("luks.cipher", Fail, subj, cev, e.t("ev.luks.ecb"))
	case strings.Contains(c, "-cbc-plain"):
		e.add("luks.cipher", Warn, subj, cev, e.t("ev.luks.cbcplain"))
	case strings.Contains(c, "xts") && h.KeySize < xtsMinKeyBits:
		e.add("luks.cipher", Warn, subj, cev, e.t("ev.luks.xtsshort"))
	case strings.Contains(c, "cbc"):
		e.add("luks.cipher", Warn, subj, cev, e.t("ev.luks.cbc"))
	default:
		e.add("luks.cipher", Pass, subj, cev)
	}

	// luks.kdf: the weakest keyslot decides. A keyslot a Clevis,
	// systemd-tpm2 or systemd-fido2 token unlocks holds a random key the
	// tool generated (clevis luks bind: pwmake of the volume key's
	// entropy; systemd-cryptenroll: 256 bits), which both store with
	// PBKDF2 at the least cost on purpose: nobody types it, so there is
	// nothing for a slow KDF to protect, and every unattended boot pays it.
	machineKey := h.TokenKeyslots("clevis", "systemd-tpm2", "systemd-fido2")
	kst := Pass
	var kev []string
	for _, k := range h.Keyslots {
		s := Pass
		switch {
		case machineKey[k.ID]:
			kev = append(kev, fmt.Sprintf("Keyslot %s: %s", kdfString(k), e.t("ev.luks.kdftoken")))
			continue
		case k.KDF == "pbkdf2" && k.Iterations < pbkdf2Broken:
			s = Fail
		case k.KDF == "pbkdf2":
			s = Warn
		case strings.HasPrefix(k.KDF, "argon2") && k.MemoryKiB < argon2MinKiB:
			s = Warn
		}
		// The keyslot's own verdict, worded as the report's badges are.
		kev = append(kev, fmt.Sprintf("Keyslot %s: %s", kdfString(k), e.t("ui.badge."+string(s))))
		if s.rank() > kst.rank() {
			kst = s
		}
	}
	e.add("luks.kdf", kst, subj, kev...)

	// luks.keyslots
	slots := e.tn("ev.luks.slots", len(h.Keyslots))
	if len(h.Tokens) > 0 {
		slots += ", tokens: " + strings.Join(h.Tokens, ", ")
	}
	if len(h.Keyslots) < 2 {
		e.add("luks.keyslots", Warn, subj, slots)
	} else {
		e.add("luks.keyslots", Pass, subj, slots)
	}

	// luks.discard
	var dev []string
	if d.DiscardMaxBytes > 0 {
		dev = append(dev, fmt.Sprintf("/sys/block/%s/queue/discard_max_bytes = %d", d.Name, d.DiscardMaxBytes))
	}
	for _, f := range h.Flags {
		if f == "allow-discards" {
			dev = append(dev, "LUKS2 persistent flag allow-discards")
		}
	}
	for _, ct := range e.crypttab {
		if ct.Name == d.DMName && ct.HasOption("discard") {
			dev = append(dev, e.line("/etc/crypttab", ct.Line)+": discard")
		}
	}
	if len(dev) > 0 {
		e.add("luks.discard", Warn, subj, dev...)
	} else {
		e.add("luks.discard", Pass, subj, e.t("ev.luks.nodiscard"))
	}
}

func kdfString(k luks.Keyslot) string {
	if k.KDF == "pbkdf2" {
		return fmt.Sprintf("%d pbkdf2-%s iterations=%d", k.ID, k.Hash, k.Iterations)
	}
	return fmt.Sprintf("%d %s t=%d m=%dKiB p=%d", k.ID, k.KDF, k.Time, k.MemoryKiB, k.Parallel)
}

// header finds the LUKS metadata of a crypt node: in a captured tree from
// the manifest, on a live root from the device under the node.
func (e *env) header(d *blockstack.Device) (*luks.Header, string, error) {
	if r, ok := e.headers[d.Name]; ok {
		return r.h, r.src, r.err
	}
	h, src, err := e.readHeader(d)
	if e.headers != nil {
		e.headers[d.Name] = headerResult{h, src, err}
	}
	return h, src, err
}

func (e *env) readHeader(d *blockstack.Device) (*luks.Header, string, error) {
	low := d.Lower()
	if len(low) != 1 {
		return nil, "", errors.New(e.t("ev.luks.noslave", d.Name))
	}
	devPath := "/dev/" + low[0]
	want := d.CryptUUID()
	if e.manifest != nil {
		h, ok := e.manifest.LUKS[devPath]
		if ok && h == nil {
			ok = false
		}
		if !ok {
			return nil, "", errors.New(e.t("ev.luks.notcaptured", devPath))
		}
		if want != "" && strings.ReplaceAll(h.UUID, "-", "") != want {
			return nil, "", errors.New(e.t("ev.luks.uuidmismatch", devPath, h.UUID))
		}
		return h, e.t("ev.luks.fromcapture", devPath), nil
	}
	f, err := rootfs.OpenDevice(e.fs, devPath)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	o, ok := rootfs.OSFile(f)
	if !ok {
		return nil, "", errors.New(e.t("ev.luks.notcaptured", devPath))
	}
	h, err := luks.ReadHeaderFile(o, devPath)
	if errors.Is(err, luks.ErrMalformed) {
		e.refused[rootfs.Clean(devPath)] = err.Error() // a crafted header: refused, listed in coverage
	}
	if err != nil {
		return nil, "", err
	}
	if want != "" && strings.ReplaceAll(h.UUID, "-", "") != want {
		return nil, "", errors.New(e.t("ev.luks.uuidmismatch", devPath, h.UUID))
	}
	return h, devPath, nil
}

// protects lists what sits above a crypt node: mount points, swap,
// devices nothing else is built on.
func (e *env) protects(d *blockstack.Device) []string {
	var out []string
	seen := map[string]bool{}
	var walk func(x *blockstack.Device)
	walk = func(x *blockstack.Device) {
		if seen[x.Name] {
			return
		}
		seen[x.Name] = true
		out = append(out, x.Mounts...)
		if x.Swap {
			out = append(out, "[swap]")
		}
		ups := e.sys.Uppers(x)
		if len(ups) == 0 && len(x.Mounts) == 0 && !x.Swap && x != d {
			if x.DMName != "" {
				out = append(out, "/dev/mapper/"+x.DMName)
			} else {
				out = append(out, "/dev/"+x.Name)
			}
		}
		for _, u := range ups {
			walk(u)
		}
	}
	walk(d)
	sort.Strings(out)
	return dedup(out)
}
