package layout

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// Size is a volume or partition size: absolute ("20GiB", "512MiB") or
// relative as LVM understands it ("40%VG" of the volume group, "100%FREE" of
// what is left when the volume is created).
type Size struct {
	Raw     string  // as written
	Bytes   int64   // absolute size; 0 when relative
	Percent float64 // relative size in percent; 0 when absolute
	Of      string  // "VG" or "FREE" when relative
}

// IsZero reports whether no size was given.
func (s Size) IsZero() bool { return s.Raw == "" }

// Relative reports whether the size is a percentage.
func (s Size) Relative() bool { return s.Of != "" }

func (s Size) String() string { return s.Raw }

// MarshalJSON writes the size as its source text.
func (s Size) MarshalJSON() ([]byte, error) { return json.Marshal(s.Raw) }

// UnmarshalJSON reads a size from its source text.
func (s *Size) UnmarshalJSON(b []byte) error {
	var raw string
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	p, err := ParseSize(raw)
	if err != nil {
		return err
	}
	*s = p
	return nil
}

var (
	absRe = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)$`)
	relRe = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*%\s*([A-Za-z]+)$`)
)

// Units: binary multiples, as LVM reads them (lvcreate -L 20G means 20 GiB);
// the explicit decimal forms (GB) are decimal, as their SI names say.
var units = map[string]int64{
	"b": 1, "": 0,
	"k": 1 << 10, "kib": 1 << 10, "kb": 1000,
	"m": 1 << 20, "mib": 1 << 20, "mb": 1000 * 1000,
	"g": 1 << 30, "gib": 1 << 30, "gb": 1000 * 1000 * 1000,
	"t": 1 << 40, "tib": 1 << 40, "tb": 1000 * 1000 * 1000 * 1000,
	"p": 1 << 50, "pib": 1 << 50, "pb": 1000 * 1000 * 1000 * 1000 * 1000,
}

// ParseSize parses "20GiB", "1.5T", "512MiB", "40%VG" or "100%FREE".
func ParseSize(raw string) (Size, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return Size{}, fmt.Errorf("size is empty")
	}
	if m := relRe.FindStringSubmatch(s); m != nil {
		pct, _ := strconv.ParseFloat(m[1], 64)
		of := strings.ToUpper(m[2])
		if of != "VG" && of != "FREE" {
			return Size{}, fmt.Errorf("cannot parse size %q: a percentage must be of VG or FREE, as in 40%%VG or 100%%FREE", raw)
		}
		if pct <= 0 || pct > 100 {
			return Size{}, fmt.Errorf("cannot parse size %q: the percentage must be more than 0 and at most 100", raw)
		}
		return Size{Raw: s, Percent: pct, Of: of}, nil
	}
	m := absRe.FindStringSubmatch(s)
	if m == nil {
		return Size{}, fmt.Errorf("cannot parse size %q: write a number and a unit such as 512MiB or 20GiB, or a share such as 40%%VG", raw)
	}
	unit, ok := units[strings.ToLower(m[2])]
	if !ok {
		return Size{}, fmt.Errorf("cannot parse size %q: unknown unit %q; use B, KiB, MiB, GiB, TiB (or K, M, G, T)", raw, m[2])
	}
	if unit == 0 {
		return Size{}, fmt.Errorf("cannot parse size %q: a bare number is ambiguous; add a unit, as in %sGiB", raw, m[1])
	}
	n, _ := strconv.ParseFloat(m[1], 64)
	b := n * float64(unit)
	if b < 1 || b > math.MaxInt64/2 {
		return Size{}, fmt.Errorf("cannot parse size %q: out of range", raw)
	}
	return Size{Raw: s, Bytes: int64(math.Round(b))}, nil
}

// FormatBytes renders a byte count for humans with binary units.
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	suffix := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v := float64(n)
	i := -1
	for v >= unit && i < len(suffix)-1 {
		v /= unit
		i++
	}
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f %s", v, suffix[i])
	}
	return fmt.Sprintf("%.1f %s", v, suffix[i])
}
