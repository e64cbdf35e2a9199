package blockstack

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Swap is one active swap area from /proc/swaps.
type Swap struct {
	Filename string `json:"filename"` // device node or swap file, as the kernel names it
	Type     string `json:"type"`     // "partition" (any block device) or "file"
	SizeKiB  uint64 `json:"sizeKiB"`
	UsedKiB  uint64 `json:"usedKiB"`
	Priority int    `json:"priority"`
	Deleted  bool   `json:"deleted,omitempty"` // the swap file was unlinked while active
}

// ParseSwaps parses /proc/swaps. The kernel (mm/swapfile.c swap_show)
// prints a header line, then the path escaped like mountinfo (" \t\n\\"),
// the type, size and used in KiB, and the priority. A swap file that was
// removed while active keeps its name with " (deleted)" appended by d_path.
func ParseSwaps(r io.Reader) ([]Swap, error) {
	var out []Swap
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 || (n == 1 && f[0] == "Filename") {
			continue
		}
		// " (deleted)" arrives escaped as "\040(deleted)" inside the first field.
		if len(f) != 5 {
			return nil, fmt.Errorf("cannot parse swaps line %d: want 5 fields, got %d", n, len(f))
		}
		s := Swap{Filename: Unescape(f[0]), Type: f[1]}
		if strings.HasSuffix(s.Filename, " (deleted)") {
			s.Filename = strings.TrimSuffix(s.Filename, " (deleted)")
			s.Deleted = true
		}
		if s.Filename == "" {
			return nil, fmt.Errorf("cannot parse swaps line %d: empty file name", n)
		}
		var err error
		if s.SizeKiB, err = strconv.ParseUint(f[2], 10, 64); err != nil {
			return nil, fmt.Errorf("cannot parse swaps line %d: bad size %q", n, f[2])
		}
		if s.UsedKiB, err = strconv.ParseUint(f[3], 10, 64); err != nil {
			return nil, fmt.Errorf("cannot parse swaps line %d: bad used %q", n, f[3])
		}
		if s.Priority, err = strconv.Atoi(f[4]); err != nil {
			return nil, fmt.Errorf("cannot parse swaps line %d: bad priority %q", n, f[4])
		}
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cannot read swaps: %w", err)
	}
	return out, nil
}
