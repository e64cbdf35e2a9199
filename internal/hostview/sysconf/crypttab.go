package sysconf

import (
	"fmt"
	"io"
	"strings"
)

// CrypttabEntry is one line of /etc/crypttab (crypttab(5)).
type CrypttabEntry struct {
	Name    string `json:"name"`              // the /dev/mapper name
	Device  string `json:"device"`            // /dev/..., UUID=..., PARTUUID=..., LABEL=...
	KeyFile string `json:"keyFile,omitempty"` // "" when none/"-" (ask for a passphrase)
	// KeyDevice is set for systemd's "path:device" syntax: the key file
	// lives on another device that systemd-cryptsetup mounts temporarily.
	KeyDevice string   `json:"keyDevice,omitempty"`
	Options   []string `json:"options,omitempty"`
	Line      int      `json:"line"`
}

// HasOption reports whether the entry lists the option.
func (e CrypttabEntry) HasOption(name string) bool { return hasOption(e.Options, name) }

// Option returns the value of name=value.
func (e CrypttabEntry) Option(name string) (string, bool) { return optionValue(e.Options, name) }

// RandomKey reports whether the key is read from a random source, so the
// volume gets a fresh key each boot (swap, tmp): nothing survives a reboot.
func (e CrypttabEntry) RandomKey() bool {
	return e.KeyFile == "/dev/urandom" || e.KeyFile == "/dev/random" || e.KeyFile == "/dev/hw_random"
}

// ParseCrypttab parses crypttab(5): name, device, optional key file
// ("none" or "-" for a passphrase) and optional comma-separated options.
func ParseCrypttab(r io.Reader) ([]CrypttabEntry, error) {
	var out []CrypttabEntry
	err := eachLine(r, func(n int, line string) error {
		f := strings.Fields(line)
		if len(f) < 2 || len(f) > 4 {
			return fmt.Errorf("cannot parse crypttab line %d: want 2 to 4 fields, got %d", n, len(f))
		}
		e := CrypttabEntry{Name: unescape(f[0]), Device: unescape(f[1]), Line: n}
		if len(f) > 2 && f[2] != "none" && f[2] != "-" {
			kf := unescape(f[2])
			// systemd-cryptsetup: "keyfile:device" reads the key from another device.
			// A plain path never contains ":" followed by a device spec in practice.
			if p, dev, ok := strings.Cut(kf, ":"); ok && strings.HasPrefix(p, "/") && dev != "" {
				e.KeyFile, e.KeyDevice = p, dev
			} else {
				e.KeyFile = kf
			}
		}
		if len(f) > 3 && f[3] != "-" && f[3] != "defaults" {
			e.Options = strings.Split(f[3], ",")
		}
		out = append(out, e)
		return nil
	})
	return out, err
}

// UnstableDevice reports whether a crypttab device spec names a kernel
// device node whose name can change between boots (/dev/sdb2 may become a
// different disk); persistent names are UUID=, PARTUUID=, LABEL=,
// /dev/disk/by-*, /dev/mapper/* and /dev/VG/LV.
func UnstableDevice(spec string) bool {
	if !strings.HasPrefix(spec, "/dev/") {
		return false
	}
	rest := strings.TrimPrefix(spec, "/dev/")
	if strings.HasPrefix(rest, "disk/by-") || strings.HasPrefix(rest, "mapper/") {
		return false
	}
	if strings.Contains(rest, "/") { // /dev/VG/LV
		return false
	}
	// dm-N, sdX, vdX, nvmeXnY, hdX, xvdX, mmcblkN, loopN, mdN: all assigned at probe time.
	return true
}
