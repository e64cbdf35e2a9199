package sysconf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// QCOW2 is what a qcow2 image header says about where data lives.
type QCOW2 struct {
	Version       int    `json:"version"`
	Size          uint64 `json:"size"` // virtual disk size, bytes
	ClusterBits   int    `json:"clusterBits"`
	CryptMethod   int    `json:"cryptMethod"` // 0 none, 1 AES (legacy, broken), 2 LUKS
	BackingFile   string `json:"backingFile,omitempty"`
	BackingFormat string `json:"backingFormat,omitempty"`
	DataFile      string `json:"dataFile,omitempty"` // external data file: the guest's data is there
	Snapshots     int    `json:"snapshots,omitempty"`
	// CryptHeader locates the LUKS header qemu keeps inside an image with
	// encrypt.format=luks (header extension 0x0537be77: offset, length).
	CryptHeaderOffset uint64 `json:"cryptHeaderOffset,omitempty"`
	CryptHeaderLength uint64 `json:"cryptHeaderLength,omitempty"`
	// HeaderEnd is the offset up to which the header, its extensions and the
	// backing file name reach; `capture` copies exactly these bytes.
	HeaderEnd int64 `json:"-"`
}

// Encrypted reports whether qemu encrypts the image's clusters itself.
func (q *QCOW2) Encrypted() bool { return q.CryptMethod != 0 }

// ErrNotQCOW2 is returned when the magic is absent.
var ErrNotQCOW2 = errors.New("no qcow2 magic")

// QCOW2Magic is "QFI\xfb" (qemu docs/interop/qcow2.txt).
var QCOW2Magic = []byte{'Q', 'F', 'I', 0xfb}

// Limits from qemu block/qcow2.c: backing file names are at most 1023
// bytes, and the header with its extensions fits in the first cluster
// (cluster_bits 9..21, so at most 2 MiB).
const (
	qcowMaxBackingName = 1023
	qcowMinCluster     = 9
	qcowMaxCluster     = 21
)

// Header extension types (docs/interop/qcow2.txt).
const (
	extEnd           = 0x00000000
	extBackingFormat = 0xe2792aca
	extDataFile      = 0x44415441
	extCryptHeader   = 0x0537be77
)

// ParseQCOW2 reads the header of a qcow2 image: version, size,
// encryption, backing file and format, external data file.
func ParseQCOW2(r io.ReaderAt) (*QCOW2, error) {
	h := make([]byte, 104)
	n, err := r.ReadAt(h, 0)
	if n < 72 {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("cannot read qcow2 header: %w", err)
	}
	if !bytes.Equal(h[:4], QCOW2Magic) {
		return nil, ErrNotQCOW2
	}
	be := binary.BigEndian
	q := &QCOW2{
		Version:     int(be.Uint32(h[4:8])),
		ClusterBits: int(be.Uint32(h[20:24])),
		Size:        be.Uint64(h[24:32]),
		CryptMethod: int(be.Uint32(h[32:36])),
		Snapshots:   int(be.Uint32(h[60:64])),
	}
	if q.Version != 2 && q.Version != 3 {
		return nil, fmt.Errorf("cannot read qcow2 header: unsupported version %d", q.Version)
	}
	if q.ClusterBits < qcowMinCluster || q.ClusterBits > qcowMaxCluster {
		return nil, fmt.Errorf("cannot read qcow2 header: cluster_bits %d out of range", q.ClusterBits)
	}
	cluster := int64(1) << q.ClusterBits
	hdrLen := int64(72)
	if q.Version == 3 {
		if n < 104 {
			return nil, fmt.Errorf("cannot read qcow2 header: version 3 header truncated")
		}
		hdrLen = int64(be.Uint32(h[100:104]))
		if hdrLen < 104 || hdrLen > cluster {
			return nil, fmt.Errorf("cannot read qcow2 header: header_length %d out of range", hdrLen)
		}
	}
	end := hdrLen
	// Header extensions follow the header, 8-byte aligned, up to the end of the first cluster.
	off := hdrLen
	for off+8 <= cluster {
		e := make([]byte, 8)
		if _, err := r.ReadAt(e, off); err != nil {
			break // a truncated capture may stop after the last extension
		}
		typ, l := be.Uint32(e[0:4]), int64(be.Uint32(e[4:8]))
		off += 8
		if typ == extEnd {
			break
		}
		if l > cluster-off {
			return nil, fmt.Errorf("cannot read qcow2 header: extension 0x%08x length %d beyond the first cluster", typ, l)
		}
		if typ == extCryptHeader && l >= 16 {
			data := make([]byte, 16)
			if _, err := r.ReadAt(data, off); err != nil {
				return nil, fmt.Errorf("cannot read qcow2 header extension: %w", err)
			}
			q.CryptHeaderOffset, q.CryptHeaderLength = be.Uint64(data[0:8]), be.Uint64(data[8:16])
		}
		if typ == extBackingFormat || typ == extDataFile {
			data := make([]byte, l)
			if _, err := r.ReadAt(data, off); err != nil {
				return nil, fmt.Errorf("cannot read qcow2 header extension: %w", err)
			}
			if typ == extBackingFormat {
				q.BackingFormat = string(data)
			} else {
				q.DataFile = string(data)
			}
		}
		off += (l + 7) &^ 7
	}
	if off > end {
		end = off
	}
	bOff, bLen := be.Uint64(h[8:16]), int64(be.Uint32(h[16:20]))
	if bOff != 0 && bLen > 0 {
		if bLen > qcowMaxBackingName || bOff > uint64(cluster) || int64(bOff)+bLen > cluster {
			return nil, fmt.Errorf("cannot read qcow2 header: backing file name at %d+%d outside the first cluster", bOff, bLen)
		}
		name := make([]byte, bLen)
		if _, err := r.ReadAt(name, int64(bOff)); err != nil {
			return nil, fmt.Errorf("cannot read qcow2 backing file name: %w", err)
		}
		q.BackingFile = string(name)
		if e := int64(bOff) + bLen; e > end {
			end = e
		}
	}
	q.HeaderEnd = end
	return q, nil
}
