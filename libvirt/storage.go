package libvirt

import (
	"fmt"
	"sort"

	lv "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/cryptshift/cryptshift/internal/doors/qemuimg"
)

// DefineSecret defines (or redefines) a secret; uuid is chosen by the caller
// so that a plan can name it before it exists.
func (c *Conn) DefineSecret(s *libvirtxml.Secret) error {
	doc, err := s.Marshal()
	if err != nil {
		return fmt.Errorf("cannot encode secret %s: %w", s.UUID, err)
	}
	if _, err := c.l.SecretDefineXML(doc, 0); err != nil {
		return fmt.Errorf("cannot define secret %s: %w", s.UUID, err)
	}
	return nil
}

func (c *Conn) secret(uuid string) (lv.Secret, error) {
	u, err := parseUUID(uuid)
	if err != nil {
		return lv.Secret{}, err
	}
	return c.l.SecretLookupByUUID(u)
}

// SecretExists reports whether a secret with this UUID is defined.
func (c *Conn) SecretExists(uuid string) (bool, error) {
	_, err := c.secret(uuid)
	if err == nil {
		return true, nil
	}
	if IsNotFound(err) {
		return false, nil
	}
	return false, fmt.Errorf("cannot look up secret %s: %w", uuid, err)
}

// HasSecretValue reports whether a defined secret holds a value.
func (c *Conn) HasSecretValue(uuid string) (bool, error) {
	s, err := c.secret(uuid)
	if err != nil {
		if IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("cannot look up secret %s: %w", uuid, err)
	}
	if _, err := c.l.SecretGetValue(s, 0); err != nil {
		if IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("cannot read secret %s: %w", uuid, err)
	}
	return true, nil
}

// SetSecretValue stores a secret's value in libvirtd.
func (c *Conn) SetSecretValue(uuid string, value []byte) error {
	s, err := c.secret(uuid)
	if err != nil {
		return fmt.Errorf("cannot find secret %s: %w", uuid, err)
	}
	if err := c.l.SecretSetValue(s, value, 0); err != nil {
		return fmt.Errorf("cannot set the value of secret %s: %w", uuid, err)
	}
	return nil
}

// SecretValue reads a secret's value (only possible for non-private secrets).
func (c *Conn) SecretValue(uuid string) ([]byte, error) {
	s, err := c.secret(uuid)
	if err != nil {
		return nil, fmt.Errorf("cannot find secret %s: %w", uuid, err)
	}
	v, err := c.l.SecretGetValue(s, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot read the value of secret %s: %w", uuid, err)
	}
	return v, nil
}

// UndefineSecret removes a secret; a secret that does not exist is fine.
func (c *Conn) UndefineSecret(uuid string) error {
	s, err := c.secret(uuid)
	if err != nil {
		if IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("cannot find secret %s: %w", uuid, err)
	}
	if err := c.l.SecretUndefine(s); err != nil && !IsNotFound(err) {
		return fmt.Errorf("cannot remove secret %s: %w", uuid, err)
	}
	return nil
}

// SecretUUIDs lists the UUIDs of every defined secret, sorted.
func (c *Conn) SecretUUIDs() ([]string, error) {
	secs, _, err := c.l.ConnectListAllSecrets(1, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot list secrets: %w", err)
	}
	var out []string
	for _, s := range secs {
		out = append(out, uuidString(s.UUID))
	}
	sort.Strings(out)
	return out, nil
}

// Pool describes a storage pool.
type Pool struct {
	Name       string
	Type       string // dir, fs, netfs, logical, ...
	Path       string // target path: the directory of a dir pool
	Active     bool
	Capacity   uint64
	Allocation uint64
	Available  uint64
}

// Pool looks a storage pool up by name.
func (c *Conn) Pool(name string) (Pool, error) {
	p, err := c.l.StoragePoolLookupByName(name)
	if err != nil {
		if IsNotFound(err) {
			names, _ := c.PoolNames()
			return Pool{}, fmt.Errorf("cannot find storage pool %q: no such pool (pools: %v); create one with virsh pool-define-as", name, names)
		}
		return Pool{}, fmt.Errorf("cannot look up storage pool %q: %w", name, err)
	}
	st, capa, alloc, avail, err := c.l.StoragePoolGetInfo(p)
	if err != nil {
		return Pool{}, fmt.Errorf("cannot read storage pool %q: %w", name, err)
	}
	doc, err := c.l.StoragePoolGetXMLDesc(p, 0)
	if err != nil {
		return Pool{}, fmt.Errorf("cannot read storage pool %q: %w", name, err)
	}
	var x libvirtxml.StoragePool
	if err := x.Unmarshal(doc); err != nil {
		return Pool{}, fmt.Errorf("cannot parse storage pool %q: %w", name, err)
	}
	out := Pool{Name: name, Type: x.Type, Active: lv.StoragePoolState(st) == lv.StoragePoolRunning,
		Capacity: capa, Allocation: alloc, Available: avail}
	if x.Target != nil {
		out.Path = x.Target.Path
	}
	return out, nil
}

// PoolNames lists every storage pool, sorted.
func (c *Conn) PoolNames() ([]string, error) {
	pools, _, err := c.l.ConnectListAllStoragePools(1, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot list storage pools: %w", err)
	}
	var names []string
	for _, p := range pools {
		names = append(names, p.Name)
	}
	sort.Strings(names)
	return names, nil
}

// RefreshPool makes libvirt rescan a pool, so that images created in its
// directory become volumes and its free space is current.
func (c *Conn) RefreshPool(name string) error {
	p, err := c.l.StoragePoolLookupByName(name)
	if err != nil {
		return fmt.Errorf("cannot find storage pool %q: %w", name, err)
	}
	if err := c.l.StoragePoolRefresh(p, 0); err != nil {
		return fmt.Errorf("cannot refresh storage pool %q: %w", name, err)
	}
	return nil
}

// Volume describes a storage volume.
type Volume struct {
	Pool       string
	Name       string
	Path       string
	Format     string // raw, qcow2, ...
	Encryption string // luks, or "" for none
	Capacity   uint64
	Allocation uint64
}

func (c *Conn) volume(v lv.StorageVol) (Volume, error) {
	doc, err := c.l.StorageVolGetXMLDesc(v, 0)
	if err != nil {
		return Volume{}, fmt.Errorf("cannot read volume %s/%s: %w", v.Pool, v.Name, err)
	}
	var x libvirtxml.StorageVolume
	if err := x.Unmarshal(doc); err != nil {
		return Volume{}, fmt.Errorf("cannot parse volume %s/%s: %w", v.Pool, v.Name, err)
	}
	out := Volume{Pool: v.Pool, Name: v.Name, Path: v.Key}
	if x.Target != nil {
		if x.Target.Path != "" {
			out.Path = x.Target.Path
		}
		if x.Target.Format != nil {
			out.Format = x.Target.Format.Type
		}
		if x.Target.Encryption != nil {
			out.Encryption = x.Target.Encryption.Format
		}
	}
	if x.Capacity != nil {
		out.Capacity = scale(x.Capacity)
	}
	if x.Allocation != nil {
		out.Allocation = scale(x.Allocation)
	}
	return out, nil
}

// scale converts a libvirt size with unit to bytes; libvirt reports bytes
// in everything it generates, the units cover hand-written documents.
func scale(s *libvirtxml.StorageVolumeSize) uint64 {
	mult := map[string]uint64{"": 1, "b": 1, "bytes": 1, "KiB": 1 << 10, "K": 1 << 10, "k": 1 << 10,
		"MiB": 1 << 20, "M": 1 << 20, "GiB": 1 << 30, "G": 1 << 30, "TiB": 1 << 40, "T": 1 << 40,
		"KB": 1000, "MB": 1000 * 1000, "GB": 1000 * 1000 * 1000}[s.Unit]
	if mult == 0 {
		mult = 1
	}
	return s.Value * mult
}

// Volume looks a volume up by pool and name.
func (c *Conn) Volume(pool, name string) (Volume, error) {
	p, err := c.l.StoragePoolLookupByName(pool)
	if err != nil {
		return Volume{}, fmt.Errorf("cannot find storage pool %q: %w", pool, err)
	}
	v, err := c.l.StorageVolLookupByName(p, name)
	if err != nil {
		return Volume{}, fmt.Errorf("cannot find volume %q in pool %q: %w", name, pool, err)
	}
	return c.volume(v)
}

// VolumeByPath looks up the volume that has this path in any pool.
func (c *Conn) VolumeByPath(path string) (Volume, error) {
	v, err := c.l.StorageVolLookupByPath(path)
	if err != nil {
		return Volume{}, fmt.Errorf("cannot find a volume with path %s: %w", path, err)
	}
	return c.volume(v)
}

// VolumeNames lists the volumes of a pool, sorted.
func (c *Conn) VolumeNames(pool string) ([]string, error) {
	p, err := c.l.StoragePoolLookupByName(pool)
	if err != nil {
		return nil, fmt.Errorf("cannot find storage pool %q: %w", pool, err)
	}
	vols, _, err := c.l.StoragePoolListAllVolumes(p, 1, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot list the volumes of pool %q: %w", pool, err)
	}
	var names []string
	for _, v := range vols {
		names = append(names, v.Name)
	}
	sort.Strings(names)
	return names, nil
}

// NewEncryptedVolume describes a volume for CreateVolume: a file of the
// given virtual size in format qcow2 (LUKS inside qcow2) or raw (qemu's
// LUKS format), encrypted with the passphrase in the libvirt secret
// secretUUID, readable by its owner only, with no preallocation. The
// cipher and the key derivation are left to qemu's defaults
// (aes-256-xts-plain64, PBKDF2-SHA256 for 2000 ms): libvirt's volume XML
// has no iteration time.
func NewEncryptedVolume(name, format string, size uint64, secretUUID string) *libvirtxml.StorageVolume {
	return &libvirtxml.StorageVolume{
		Type:       "file",
		Name:       name,
		Capacity:   &libvirtxml.StorageVolumeSize{Unit: "bytes", Value: size},
		Allocation: &libvirtxml.StorageVolumeSize{Unit: "bytes", Value: 0},
		Target: &libvirtxml.StorageVolumeTarget{
			Format:      &libvirtxml.StorageVolumeTargetFormat{Type: format},
			Permissions: &libvirtxml.StorageVolumeTargetPermissions{Mode: "0600"},
			Encryption: &libvirtxml.StorageEncryption{Format: "luks",
				Secret: &libvirtxml.StorageEncryptionSecret{Type: "passphrase", UUID: secretUUID}},
		},
	}
}

// CreateVolume creates a volume in a pool from its description. For an
// encrypted file volume libvirtd runs qemu-img create itself, with the
// passphrase it reads from its secret store (see docs/pool-targets.md for
// where it passes it). libvirt refuses a name or a path that exists.
func (c *Conn) CreateVolume(pool string, vol *libvirtxml.StorageVolume) (Volume, error) {
	p, err := c.l.StoragePoolLookupByName(pool)
	if err != nil {
		return Volume{}, fmt.Errorf("cannot find storage pool %q: %w", pool, err)
	}
	doc, err := vol.Marshal()
	if err != nil {
		return Volume{}, fmt.Errorf("cannot encode volume %q: %w", vol.Name, err)
	}
	var v lv.StorageVol
	for attempt := 0; attempt < qemuimg.CalibrationAttempts; attempt++ {
		// libvirtd removes what a failed qemu-img create left.
		if v, err = c.l.StorageVolCreateXML(p, doc, 0); err == nil || !qemuimg.IsCalibrationFlake(err.Error()) {
			break
		}
	}
	if err != nil {
		return Volume{}, fmt.Errorf("cannot create volume %q in pool %q: %w", vol.Name, pool, err)
	}
	return c.volume(v)
}

// DeleteVolume removes a volume; a volume that does not exist is fine.
func (c *Conn) DeleteVolume(pool, name string) error {
	p, err := c.l.StoragePoolLookupByName(pool)
	if err != nil {
		return fmt.Errorf("cannot find storage pool %q: %w", pool, err)
	}
	v, err := c.l.StorageVolLookupByName(p, name)
	if err != nil {
		if IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("cannot find volume %q in pool %q: %w", name, pool, err)
	}
	if err := c.l.StorageVolDelete(v, 0); err != nil && !IsNotFound(err) {
		return fmt.Errorf("cannot delete volume %q from pool %q: %w", name, pool, err)
	}
	return nil
}

// WipeVolume overwrites a volume with zeros through libvirt (the algorithm
// for the whole volume; what that guarantees depends on the device below).
func (c *Conn) WipeVolume(pool, name string) error {
	v, err := c.Volume(pool, name)
	if err != nil {
		return err
	}
	lvv, err := c.l.StorageVolLookupByPath(v.Path)
	if err != nil {
		return fmt.Errorf("cannot find volume %q in pool %q: %w", name, pool, err)
	}
	if err := c.l.StorageVolWipe(lvv, 0); err != nil {
		return fmt.Errorf("cannot wipe volume %q in pool %q: %w", name, pool, err)
	}
	return nil
}
