// Package manifest describes a tree captured by `cryptshift capture`.
package manifest

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
	"github.com/cryptshift/cryptshift/internal/hostview/sysconf"
	"github.com/cryptshift/cryptshift/luks"
)

// ManifestPath is where a captured tree keeps what could not be stored as
// plain files: parsed LUKS metadata, image sizes and formats, initramfs
// listings, device signatures. Its presence marks a tree as captured.
const ManifestPath = "/cryptshift-capture/manifest.json"

// Schema names the manifest format; bump it on incompatible changes.
const Schema = "cryptshift.capture/v1"

// Manifest describes a captured tree. Nothing in it is secret: LUKS
// headers are reduced to luks.Header (no keyslot material, salts or
// digests), files to their size and format, initramfs images to member
// names.
type Manifest struct {
	Schema  string `json:"schema"`
	Host    string `json:"host"`
	Date    string `json:"date"` // YYYY-MM-DD, UTC
	Tool    string `json:"tool"`
	Kernel  string `json:"kernel,omitempty"`
	Comment string `json:"comment,omitempty"` // fixtures: the scenario
	// LUKS maps a path (/dev/sda2, or a header backup file) to the
	// metadata of the LUKS header found there.
	LUKS map[string]*luks.Header `json:"luks,omitempty"`
	// Files maps image and header files that were stored truncated (only
	// their first bytes) to their real size and detected format.
	Files map[string]FileInfo `json:"files,omitempty"`
	// Signatures maps device names to what their first bytes are
	// ("luks", "swap", "ext4", "xfs", "btrfs", "LVM2_member", "" if none),
	// for block devices nothing on this system uses.
	Signatures map[string]string `json:"signatures,omitempty"`
	// Initramfs maps an initramfs image path to its member list.
	Initramfs map[string][]sysconf.InitramfsEntry `json:"initramfs,omitempty"`
	// Modes keeps the permission bits of files whose mode matters (key
	// files): version control does not preserve them in committed trees.
	Modes map[string]uint32 `json:"modes,omitempty"`
	// Skipped lists what capture could not read, with why.
	Skipped []string `json:"skipped,omitempty"`
	// DMCrypt maps the device-mapper name of every crypt node to its
	// cipher as the kernel runs it (the dm table's cipher field only; the
	// key field is never read).
	DMCrypt map[string]string `json:"dmCrypt,omitempty"`
	// Absent lists the paths verify looked for on the host that did not
	// exist there: in the tree their absence is then a fact, not a gap.
	Absent []string `json:"absent,omitempty"`
}

// DMCipher returns the captured cipher of a crypt node; m may be nil.
func (m *Manifest) DMCipher(dmName string) (string, bool) {
	if m == nil {
		return "", false
	}
	c, ok := m.DMCrypt[dmName]
	return c, ok && c != ""
}

// IsAbsent reports whether capture saw p (or a directory above it)
// missing on the host.
func (m *Manifest) IsAbsent(p string) bool {
	p = rootfs.Clean(p)
	for _, a := range m.Absent {
		if p == a || strings.HasPrefix(p, strings.TrimSuffix(a, "/")+"/") {
			return true
		}
	}
	return false
}

// FileInfo records a file that the tree holds only a prefix of.
type FileInfo struct {
	Size   int64  `json:"size"`
	Format string `json:"format"` // raw, qcow2, luks
}

// ReadManifest reads the manifest of a captured tree; ok is false for a
// live root or a directory that is not a capture.
func ReadManifest(f rootfs.FS) (m *Manifest, ok bool, err error) {
	b, err := rootfs.ReadFile(f, ManifestPath)
	if err != nil {
		return nil, false, nil
	}
	m = &Manifest{}
	if err := json.Unmarshal(b, m); err != nil {
		return nil, true, fmt.Errorf("cannot read capture manifest %s: %w", ManifestPath, err)
	}
	if m.Schema != Schema {
		return nil, true, fmt.Errorf("cannot read capture manifest %s: schema %q, want %q", ManifestPath, m.Schema, Schema)
	}
	return m, true, nil
}
