// Package qemuimg is cryptshift's narrow door to qemu-img: info, create,
// convert, compare, commit and rebase, nothing else.
//
// Every call goes through an execx.Runner. Encrypted images are opened with
// --image-opts and their passphrase travels as a qemu secret object read from
// an inherited pipe (file=/proc/self/fd/N), so it is never in argv, never in a
// temporary file and never in a log line.
package qemuimg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
)

// Formats cryptshift names. "luks" is qemu's own LUKS1 container (qemu 7.2's
// luks block driver reads LUKS1 only); a qcow2 image may carry LUKS
// encryption inside (encrypt.format=luks).
const (
	Raw   = "raw"
	QCOW2 = "qcow2"
	LUKS  = "luks"
)

// Image says how qemu-img opens one image.
type Image struct {
	Path   string
	Format string // raw, qcow2 or luks; never probed (probing a guest-written raw image is unsafe)
	// Secret is the passphrase of a luks image or of a qcow2 image with LUKS
	// encryption; nil for plaintext images.
	Secret []byte
	// Backing, when set, overrides the backing image recorded in a qcow2
	// header (for example an encrypted backing file that needs its own
	// secret). Nil: qemu follows the header.
	Backing *Image
	// Direct opens the image's file with O_DIRECT (cache.direct=on): reads
	// come from the disk, never from the host's page cache, and writes do
	// not fill it. Only for files on a filesystem that supports O_DIRECT
	// (qemu fails to open the image otherwise).
	Direct bool
}

func (im Image) encrypted() bool { return len(im.Secret) > 0 }

// Info is one layer of a backing chain as qemu-img reports it.
type Info struct {
	Filename            string `json:"filename"`
	Format              string `json:"format"`
	VirtualSize         int64  `json:"virtual-size"`
	ActualSize          int64  `json:"actual-size"`
	ClusterSize         int64  `json:"cluster-size,omitempty"`
	Encrypted           bool   `json:"encrypted,omitempty"`
	BackingFilename     string `json:"backing-filename,omitempty"`
	FullBackingFilename string `json:"full-backing-filename,omitempty"`
	BackingFormat       string `json:"backing-filename-format,omitempty"`
	DirtyFlag           bool   `json:"dirty-flag,omitempty"`
}

// Driver runs qemu-img.
type Driver struct {
	Runner execx.Runner
}

// New returns a driver that runs qemu-img on this machine.
func New() *Driver { return &Driver{Runner: execx.Exec{}} }

// InfoChain returns the image at path and every backing file below it, top
// first. It reads metadata only and passes -U, so it also works on images a
// running guest holds open.
func (d *Driver) InfoChain(ctx context.Context, path, format string) ([]Info, error) {
	args := []string{"info", "--backing-chain", "--output=json", "-U"}
	if format != "" {
		args = append(args, "-f", format)
	}
	args = append(args, path)
	res, err := d.Runner.Run(ctx, execx.Cmd{Tool: "qemu-img", Args: args})
	if err != nil {
		return nil, fmt.Errorf("cannot read image %s: %w", path, err)
	}
	return ParseInfoChain(res.Stdout)
}

// ParseInfoChain decodes `qemu-img info --backing-chain --output=json`.
// qemu-img prints a bare object (not an array) for an image without a
// backing file when --backing-chain is absent; both shapes are accepted.
func ParseInfoChain(out []byte) ([]Info, error) {
	trimmed := strings.TrimSpace(string(out))
	var chain []Info
	if strings.HasPrefix(trimmed, "{") {
		var one Info
		if err := json.Unmarshal([]byte(trimmed), &one); err != nil {
			return nil, fmt.Errorf("cannot parse qemu-img info output: %w", err)
		}
		chain = []Info{one}
	} else if err := json.Unmarshal([]byte(trimmed), &chain); err != nil {
		return nil, fmt.Errorf("cannot parse qemu-img info output: %w", err)
	}
	if len(chain) == 0 {
		return nil, errors.New("cannot parse qemu-img info output: empty backing chain")
	}
	return chain, nil
}

// CreateOptions describe a new image.
type CreateOptions struct {
	Path   string
	Format string // luks or qcow2 (raw for plaintext scratch images)
	Size   int64  // virtual size in bytes
	// Secret encrypts the image: the luks format, or qcow2 with
	// encrypt.format=luks.
	Secret []byte
	// IterTimeMS is the LUKS PBKDF2 iteration time in milliseconds; 0 keeps
	// qemu's default (2000 ms).
	IterTimeMS int
	// BackingPath and BackingFormat make a qcow2 overlay. The backing file is
	// not opened (-u): it may be encrypted with a key qemu-img would need, or
	// held open by a running guest; the size is always given explicitly.
	BackingPath   string
	BackingFormat string
}

// CreateCmd returns the command Create runs, for plans and dry-runs.
func CreateCmd(o CreateOptions) execx.Cmd {
	var objs objects
	args := []string{"create", "-q"}
	var opts []string
	switch {
	case o.Format == LUKS && len(o.Secret) > 0:
		id := objs.add(o.Secret)
		opts = append(opts, "key-secret="+id)
		if o.IterTimeMS > 0 {
			opts = append(opts, "iter-time="+strconv.Itoa(o.IterTimeMS))
		}
	case o.Format == QCOW2 && len(o.Secret) > 0:
		id := objs.add(o.Secret)
		opts = append(opts, "encrypt.format=luks", "encrypt.key-secret="+id)
		if o.IterTimeMS > 0 {
			opts = append(opts, "encrypt.iter-time="+strconv.Itoa(o.IterTimeMS))
		}
	}
	args = append(args, objs.args()...)
	args = append(args, "-f", o.Format)
	if len(opts) > 0 {
		args = append(args, "-o", strings.Join(opts, ","))
	}
	if o.BackingPath != "" {
		args = append(args, "-b", o.BackingPath, "-F", o.BackingFormat, "-u")
	}
	args = append(args, o.Path, strconv.FormatInt(o.Size, 10))
	return objs.cmd(args)
}

// Create makes a new image.
func (d *Driver) Create(ctx context.Context, o CreateOptions) error {
	var err error
	for attempt := 0; attempt < CalibrationAttempts; attempt++ {
		if _, err = d.Runner.Run(ctx, CreateCmd(o)); err == nil {
			return nil
		}
		var xe *execx.Error
		if !errors.As(err, &xe) || !IsCalibrationFlake(xe.Stderr) || ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("cannot create image %s: %w", o.Path, err)
}

// CalibrationAttempts bounds the runs of a LUKS header creation that
// failed on IsCalibrationFlake. Each failed attempt takes milliseconds; a
// CI machine once needed four.
const CalibrationAttempts = 50

// IsCalibrationFlake reports whether qemu-img's message says that the
// creation of a LUKS header failed only on qemu's PBKDF calibration:
// qemu 7.2's qcrypto_pbkdf2_count_iters times a first round of 2^15
// PBKDF2 iterations by thread CPU time and gives up when that reads 0 ms,
// which tick-based CPU accounting reports now and then. Nothing was
// created; the same command simply needs another run.
func IsCalibrationFlake(msg string) bool {
	return strings.Contains(msg, "Unable to get accurate CPU usage")
}

// ConvertCmd returns the command Convert runs: it copies the guest-visible
// content of src (its whole backing chain) into the existing image dst (-n).
//
// Writing into an existing image matters for encrypted targets: qemu's luks
// driver does not promise zero-initialised data (an unwritten area decrypts
// to noise), so qemu-img must write every block, zeros included, and it does
// so for a target it did not create itself.
func ConvertCmd(src, dst Image) execx.Cmd { return convertCmd(src, dst) }

func convertCmd(src, dst Image, opts ...string) execx.Cmd {
	var objs objects
	srcSpec := objs.spec(src)
	dstSpec := objs.spec(dst)
	args := append([]string{"convert", "-q"}, objs.args()...)
	// The source is a frozen image that no one writes; dst was made for us.
	args = append(append(append(args, "-n"), opts...), "--image-opts", "--target-image-opts", srcSpec, dstSpec)
	return objs.cmd(args)
}

// Convert copies src into dst.
func (d *Driver) Convert(ctx context.Context, src, dst Image) error {
	if _, err := d.Runner.Run(ctx, ConvertCmd(src, dst)); err != nil {
		return fmt.Errorf("cannot copy %s to %s: %w", src.Path, dst.Path, err)
	}
	return nil
}

// ConvertSparseCmd returns the command ConvertSparse runs: like ConvertCmd
// (the whole chain of src flattened into the existing image dst), but
// --target-is-zero tells qemu-img that dst reads as zeros everywhere, so it
// writes only the source's data: holes and zero blocks (qemu-img's default
// zero detection, 4 KiB) stay unallocated in dst.
//
// Only correct for a dst that reads zeros wherever nothing was written: a
// qcow2 image without a backing file (an unallocated cluster reads as zeros,
// encrypted or not). Never for a luks image (unwritten ciphertext decrypts
// to noise) nor for a qcow2 with a backing file. Rerunning it after an
// interruption is safe: dst only ever received src's data at src's offsets.
func ConvertSparseCmd(src, dst Image) execx.Cmd { return convertCmd(src, dst, "--target-is-zero") }

// ConvertSparse copies the data of src into dst, which must read as zeros
// (see ConvertSparseCmd).
func (d *Driver) ConvertSparse(ctx context.Context, src, dst Image) error {
	if dst.Format != QCOW2 || dst.Backing != nil {
		return fmt.Errorf("cannot copy %s to %s sparsely: only a qcow2 image without a backing file reads as zeros where nothing is written", src.Path, dst.Path)
	}
	if _, err := d.Runner.Run(ctx, ConvertSparseCmd(src, dst)); err != nil {
		return fmt.Errorf("cannot copy %s to %s: %w", src.Path, dst.Path, err)
	}
	return nil
}

// CompareCmd returns the command Compare runs. forceShare (-U) reads images
// that a running (paused) guest holds open.
func CompareCmd(a, b Image, forceShare bool) execx.Cmd {
	objs := objects{share: forceShare}
	aSpec, bSpec := objs.spec(a), objs.spec(b)
	args := append([]string{"compare"}, objs.args()...)
	if forceShare {
		args = append(args, "-U")
	}
	args = append(args, "--image-opts", aSpec, bSpec)
	return objs.cmd(args)
}

// ErrDiffer is returned by Compare when the guest-visible contents differ.
var ErrDiffer = errors.New("images differ")

// Compare checks that a and b hold the same guest-visible data, byte for
// byte (qemu-img compare exits 0 when identical, 1 when they differ, 2 on
// error). Areas that one image leaves unallocated compare as zeros.
func (d *Driver) Compare(ctx context.Context, a, b Image, forceShare bool) error {
	res, err := d.Runner.Run(ctx, CompareCmd(a, b, forceShare))
	if err == nil {
		return nil
	}
	var xe *execx.Error
	if errors.As(err, &xe) && xe.ExitCode == 1 {
		msg := strings.TrimSpace(string(res.Stdout))
		if msg == "" {
			msg = strings.TrimSpace(xe.Stderr)
		}
		return fmt.Errorf("cannot verify %s against %s: %w: %s", b.Path, a.Path, ErrDiffer, msg)
	}
	return fmt.Errorf("cannot compare %s with %s: %w", a.Path, b.Path, err)
}

// CommitCmd returns the command Commit runs: it merges the overlay top into
// its backing image, which then holds the guest-visible data of both.
func CommitCmd(top Image) execx.Cmd {
	var objs objects
	spec := objs.spec(top)
	args := append([]string{"commit", "-q"}, objs.args()...)
	// -d: keep the overlay; the caller removes it after it has updated the
	// domain definition, so a crash in between leaves a consistent chain.
	args = append(args, "-d", "--image-opts", spec)
	return objs.cmd(args)
}

// Commit merges top into its backing image.
func (d *Driver) Commit(ctx context.Context, top Image) error {
	if _, err := d.Runner.Run(ctx, CommitCmd(top)); err != nil {
		return fmt.Errorf("cannot merge %s into its backing image: %w", top.Path, err)
	}
	return nil
}

// RebaseUnsafeCmd returns the command RebaseUnsafe runs.
func RebaseUnsafeCmd(img Image, backingPath, backingFormat string) execx.Cmd {
	var objs objects
	spec := objs.spec(img) // rebase -u never opens the backing file

	args := append([]string{"rebase", "-q"}, objs.args()...)
	args = append(args, "-u", "-b", backingPath, "-F", backingFormat, "--image-opts", spec)
	return objs.cmd(args)
}

// RebaseUnsafe rewrites the backing file name in a qcow2 header without
// touching data: only correct when the new backing image holds exactly the
// guest-visible data of the old one (a verified copy).
func (d *Driver) RebaseUnsafe(ctx context.Context, img Image, backingPath, backingFormat string) error {
	if _, err := d.Runner.Run(ctx, RebaseUnsafeCmd(img, backingPath, backingFormat)); err != nil {
		return fmt.Errorf("cannot rebase %s onto %s: %w", img.Path, backingPath, err)
	}
	return nil
}

// objects collects the secret objects of one command line: each distinct
// secret becomes "--object secret,id=secN,file=/proc/self/fd/M" and its bytes are
// passed on that inherited descriptor (execx.Cmd.ExtraFiles: fd 3, 4, ...).
type objects struct {
	secrets [][]byte
	// share turns qemu's image locking off on every file node. -U
	// (force-share) still asks for a shared "consistent read" lock, which
	// a running mirror job's target does not grant; the caller knows the
	// image is quiescent (the guest is paused and the job in sync).
	share bool
}

func (o *objects) add(secret []byte) string {
	for i, s := range o.secrets {
		if string(s) == string(secret) {
			return "sec" + strconv.Itoa(i)
		}
	}
	o.secrets = append(o.secrets, secret)
	return "sec" + strconv.Itoa(len(o.secrets)-1)
}

func (o *objects) args() []string {
	var a []string
	for i := range o.secrets {
		// /proc/self/fd, not /dev/fd: the latter is a symlink udev or
		// systemd create, missing from rescue and initramfs environments.
		a = append(a, "--object", fmt.Sprintf("secret,id=sec%d,file=/proc/self/fd/%d", i, 3+i))
	}
	return a
}

func (o *objects) cmd(args []string) execx.Cmd {
	return execx.Cmd{Tool: "qemu-img", Args: args, ExtraFiles: o.secrets}
}

// spec renders an image as a qemu --image-opts string.
func (o *objects) spec(im Image) string {
	return strings.Join(o.fields("", im), ",")
}

func (o *objects) fields(prefix string, im Image) []string {
	f := []string{prefix + "driver=" + im.Format}
	if im.encrypted() {
		id := o.add(im.Secret)
		switch im.Format {
		case LUKS:
			f = append(f, prefix+"key-secret="+id)
		case QCOW2:
			f = append(f, prefix+"encrypt.format=luks", prefix+"encrypt.key-secret="+id)
		}
	}
	f = append(f, prefix+"file.filename="+escape(im.Path))
	if im.Direct {
		f = append(f, prefix+"cache.direct=on")
	}
	if o.share {
		f = append(f, prefix+"file.locking=off")
	}
	if im.Backing != nil {
		f = append(f, o.fields(prefix+"backing.", *im.Backing)...)
	}
	return f
}

// escape doubles commas: qemu's option parser reads ",," as a literal comma.
func escape(path string) string { return strings.ReplaceAll(path, ",", ",,") }
