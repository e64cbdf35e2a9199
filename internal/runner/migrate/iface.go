package migrate

import (
	"context"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/cryptshift/cryptshift/internal/doors/qemuimg"
	"github.com/cryptshift/cryptshift/libvirt"
)

// Hypervisor is the part of libvirt that migrate uses; *libvirt.Conn
// implements it, and unit tests use a fake that models disk chains and
// block jobs.
type Hypervisor interface {
	Domain(name string) (libvirt.Domain, error)
	DomainNames() ([]string, error)
	DomainState(name string) (libvirt.State, error)
	DomainXML(name string, f libvirt.XMLFlags) (*libvirtxml.Domain, error)
	DefineDomain(dom *libvirtxml.Domain) error
	StartDomain(name string) error
	ShutdownDomain(name string) error
	DestroyDomain(name string) error
	SuspendDomain(name string) error
	ResumeDomain(name string) error
	WaitState(ctx context.Context, name string, want libvirt.State, every time.Duration) error

	SnapshotDisks(name string, snap *libvirtxml.DomainSnapshot, quiesce bool) error
	BlockCopy(name, disk string, dest *libvirtxml.DomainDisk, shallow bool) error
	BlockCommitActive(name, disk string) error
	BlockJob(name, disk string) (libvirt.BlockJob, error)
	WaitReady(ctx context.Context, name, disk string, report func(cur, end uint64)) error
	Pivot(name, disk string) error
	AbortJob(name, disk string) error

	DefineSecret(s *libvirtxml.Secret) error
	SecretExists(uuid string) (bool, error)
	HasSecretValue(uuid string) (bool, error)
	SetSecretValue(uuid string, value []byte) error
	SecretValue(uuid string) ([]byte, error)
	UndefineSecret(uuid string) error

	Pool(name string) (libvirt.Pool, error)
	RefreshPool(name string) error
	Volume(pool, name string) (libvirt.Volume, error)
	CreateVolume(pool string, vol *libvirtxml.StorageVolume) (libvirt.Volume, error)
	DeleteVolume(pool, name string) error
	ResolveVolumes(disks []libvirt.Disk) error
}

// ImageTool is the part of qemu-img that migrate uses; *qemuimg.Driver
// implements it (unit tests drive it with a recording runner).
type ImageTool interface {
	InfoChain(ctx context.Context, path, format string) ([]qemuimg.Info, error)
	Create(ctx context.Context, o qemuimg.CreateOptions) error
	Convert(ctx context.Context, src, dst qemuimg.Image) error
	ConvertSparse(ctx context.Context, src, dst qemuimg.Image) error
	Compare(ctx context.Context, a, b qemuimg.Image, forceShare bool) error
	Commit(ctx context.Context, top qemuimg.Image) error
	RebaseUnsafe(ctx context.Context, img qemuimg.Image, backingPath, backingFormat string) error
}
