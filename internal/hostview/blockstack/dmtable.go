package blockstack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Device-mapper ioctl interface (include/uapi/linux/dm-ioctl.h, version 4).
const (
	dmIoctlSize       = 312 // sizeof(struct dm_ioctl)
	dmTargetSpecSize  = 40  // sizeof(struct dm_target_spec)
	dmNameLen         = 128
	dmBufferFullFlag  = 1 << 8
	dmIMAMeasureFlag  = 1 << 19 // DM_IMA_MEASUREMENT_FLAG, Linux 5.15
	dmTableStatusNr   = 12
	dmIoctlType       = 0xfd
	maxDMStatusBuffer = 1 << 20
)

// dmTableStatus is _IOWR(0xfd, 12, struct dm_ioctl).
var dmTableStatus = uintptr(3<<30 | dmIoctlSize<<16 | dmIoctlType<<8 | dmTableStatusNr)

// ErrNoDMControl is returned when the kernel's device-mapper control node
// cannot be opened (no dm, not root, or not the live system).
var ErrNoDMControl = errors.New("cannot open /dev/mapper/control (device-mapper absent or not root)")

// LiveCryptCiphers asks the running kernel for the cipher of each named
// dm-crypt device. It uses the IMA form of DM_TABLE_STATUS, which reports
// "cipher_string=" but never the key (the table form would carry the key
// in hex): no key material ever enters this process. The result maps dm
// names to cipher specs; names the kernel does not answer for are absent.
func LiveCryptCiphers(names []string) (map[string]string, error) {
	f, err := os.OpenFile("/dev/mapper/control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoDMControl, err)
	}
	defer f.Close()
	out := map[string]string{}
	var firstErr error
	for _, n := range names {
		status, err := dmIMAStatus(f.Fd(), n)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if c := imaCipher(status); c != "" {
			out[n] = c
		}
	}
	if len(out) == 0 && firstErr != nil {
		return nil, firstErr
	}
	return out, nil
}

func dmIMAStatus(fd uintptr, name string) (string, error) {
	if len(name) >= dmNameLen {
		return "", fmt.Errorf("dm name %q too long", name)
	}
	for size := 16 << 10; size <= maxDMStatusBuffer; size *= 4 {
		buf := make([]byte, size)
		le := binary.LittleEndian // struct dm_ioctl is in host order; amd64 and arm64 are little-endian
		le.PutUint32(buf[0:], 4)  // version 4.0.0
		le.PutUint32(buf[12:], uint32(size))
		le.PutUint32(buf[16:], dmIoctlSize)
		le.PutUint32(buf[28:], dmIMAMeasureFlag)
		copy(buf[48:48+dmNameLen], name)
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, dmTableStatus, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
			return "", fmt.Errorf("DM_TABLE_STATUS %s: %w", name, errno)
		}
		if le.Uint32(buf[28:])&dmBufferFullFlag != 0 {
			continue
		}
		return parseDMStatus(buf, le)
	}
	return "", fmt.Errorf("DM_TABLE_STATUS %s: status larger than %d bytes", name, maxDMStatusBuffer)
}

// parseDMStatus reads the dm_target_spec list after the ioctl header and
// returns the parameter strings of crypt targets.
func parseDMStatus(buf []byte, le binary.ByteOrder) (string, error) {
	if len(buf) < dmIoctlSize {
		return "", errors.New("short dm status")
	}
	start := int(le.Uint32(buf[16:]))
	count := int(le.Uint32(buf[24:]))
	var b strings.Builder
	off := start
	for i := 0; i < count && i < 1024; i++ {
		if off < dmIoctlSize || off+dmTargetSpecSize > len(buf) {
			return "", errors.New("malformed dm status")
		}
		spec := buf[off : off+dmTargetSpecSize]
		typ := string(bytes.TrimRight(spec[24:40], "\x00"))
		params := buf[off+dmTargetSpecSize:]
		if i := bytes.IndexByte(params, 0); i >= 0 {
			params = params[:i]
		}
		if typ == "crypt" {
			b.Write(params)
			b.WriteByte(';')
		}
		next := int(le.Uint32(spec[20:24]))
		if next <= 0 {
			break
		}
		off = start + next
	}
	return b.String(), nil
}

// imaCipher picks cipher_string= from dm-crypt's IMA status
// (drivers/md/dm-crypt.c crypt_status, STATUSTYPE_IMA).
func imaCipher(status string) string {
	for _, f := range strings.FieldsFunc(status, func(r rune) bool { return r == ',' || r == ';' }) {
		if v, ok := strings.CutPrefix(f, "cipher_string="); ok {
			return v
		}
	}
	return ""
}
