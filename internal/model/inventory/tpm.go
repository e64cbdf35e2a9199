package inventory

import (
	"path"
	"strings"

	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
)

// HasTPM2 reports whether the host read through root has a TPM 2.0, and
// what it saw: the kernel's /sys/class/tpm/tpmN/tpm_version_major (Linux
// 5.6 and later) says "2"; without that file, a resource-manager node
// /dev/tpmrmN exists only for TPM 2.0 devices (drivers/char/tpm:
// tpmrm is registered for TPM2 chips only). A captured tree replays the
// host it was taken from.
func HasTPM2(root rootfs.FS) (bool, string) {
	ents, _ := rootfs.ReadDir(root, "/sys/class/tpm")
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "tpm") || strings.HasPrefix(name, "tpmrm") {
			continue
		}
		v, err := rootfs.ReadFile(root, path.Join("/sys/class/tpm", name, "tpm_version_major"))
		if err == nil && strings.TrimSpace(string(v)) == "2" {
			return true, "/sys/class/tpm/" + name + "/tpm_version_major is 2"
		}
		if err == nil {
			continue // a TPM 1.2: Clevis's tpm2 pin cannot use it
		}
		if rootfs.Exists(root, "/dev/tpmrm"+strings.TrimPrefix(name, "tpm")) {
			return true, "/dev/tpmrm" + strings.TrimPrefix(name, "tpm") + " exists"
		}
	}
	if len(ents) == 0 {
		return false, "/sys/class/tpm is empty or missing"
	}
	return false, "/sys/class/tpm lists no TPM 2.0"
}
