package luks

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	luksgo "github.com/anatol/luks.go"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
)

// Params are the LUKS2 format parameters cryptshift plans.
type Params struct {
	Cipher     string
	KeySize    int // bits
	Hash       string
	PBKDF      string
	IterTimeMs int
	MemoryKiB  int
	Parallel   int
	Iterations int // >0: --pbkdf-force-iterations instead of benchmarking
	SectorSize int
	Label      string
	UUID       string
	// Offset is the data offset in 512-byte sectors (luksFormat --offset;
	// cryptsetup wants a multiple of 8); 0 lets cryptsetup choose (16 MiB
	// with its default LUKS2 metadata and keyslot areas). Giving it makes
	// the size of the opened mapping exactly the device size minus it.
	Offset int64
}

// Stdin is the key-file argument that makes cryptsetup read a key from
// standard input; FD3 names the first extra descriptor. It is spelled with
// /proc/self/fd because /dev/fd is a symlink that udev or systemd create,
// absent from initramfs and rescue environments.
const (
	Stdin = "-"
	FD3   = "/proc/self/fd/3"
)

// PBKDFArgs renders the key-stretching options.
func PBKDFArgs(p Params) []string {
	args := []string{"--pbkdf", p.PBKDF}
	if p.Iterations > 0 {
		args = append(args, "--pbkdf-force-iterations", strconv.Itoa(p.Iterations))
	} else {
		args = append(args, "--iter-time", strconv.Itoa(p.IterTimeMs))
	}
	if p.PBKDF != "pbkdf2" {
		args = append(args, "--pbkdf-memory", strconv.Itoa(p.MemoryKiB), "--pbkdf-parallel", strconv.Itoa(p.Parallel))
	}
	return args
}

// FormatArgs is the luksFormat command line; keyFile is a path or Stdin.
func FormatArgs(p Params, keyFile, device string) []string {
	args := []string{"cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2",
		"--cipher", p.Cipher, "--key-size", strconv.Itoa(p.KeySize), "--hash", p.Hash}
	args = append(args, PBKDFArgs(p)...)
	args = append(args, "--sector-size", strconv.Itoa(p.SectorSize))
	if p.Label != "" {
		args = append(args, "--label", p.Label)
	}
	if p.UUID != "" {
		args = append(args, "--uuid", p.UUID)
	}
	if p.Offset > 0 {
		args = append(args, "--offset", strconv.FormatInt(p.Offset, 10))
	}
	return append(args, "--key-file", keyFile, device)
}

// AddKeyArgs adds the key in newKeyFile (a path or FD3) to a new keyslot,
// authorised by the key in keyFile (a path or Stdin).
func AddKeyArgs(p Params, keyFile, device, newKeyFile string) []string {
	args := []string{"cryptsetup", "luksAddKey", "--batch-mode"}
	args = append(args, PBKDFArgs(p)...)
	return append(args, "--key-file", keyFile, device, newKeyFile)
}

// OpenArgs opens a LUKS2 container as /dev/mapper/name.
func OpenArgs(keyFile, device, name string, discard bool) []string {
	args := []string{"cryptsetup", "open", "--type", "luks2", "--key-file", keyFile}
	if discard {
		args = append(args, "--allow-discards")
	}
	return append(args, device, name)
}

// OpenPlainArgs opens plain dm-crypt with a fresh random key: swap.
func OpenPlainArgs(cipher string, keySize, sectorSize int, device, name string, discard bool) []string {
	args := []string{"cryptsetup", "open", "--type", "plain", "--cipher", cipher, "--key-size", strconv.Itoa(keySize),
		"--sector-size", strconv.Itoa(sectorSize), "--key-file", "/dev/urandom"}
	if discard {
		args = append(args, "--allow-discards")
	}
	return append(args, device, name)
}

// CloseArgs closes a mapping.
func CloseArgs(name string) []string { return []string{"cryptsetup", "close", name} }

// HeaderBackupArgs writes a header backup file.
func HeaderBackupArgs(device, file string) []string {
	return []string{"cryptsetup", "luksHeaderBackup", "--batch-mode", device, "--header-backup-file", file}
}

// Cryptsetup runs cryptsetup through the exec door. Keys go on stdin or
// fd 3, never in argv.
type Cryptsetup struct {
	Run execx.Runner
}

func (c Cryptsetup) run(ctx context.Context, argv []string, stdin []byte, fd3 []byte) error {
	cmd := execx.Cmd{Tool: argv[0], Args: argv[1:], Stdin: stdin}
	if fd3 != nil {
		cmd.ExtraFiles = [][]byte{fd3}
	}
	_, err := c.Run.Run(ctx, cmd)
	return err
}

// Format formats device with a key given as bytes.
func (c Cryptsetup) Format(ctx context.Context, p Params, device string, key []byte) error {
	return c.run(ctx, FormatArgs(p, Stdin, device), key, nil)
}

// AddKey adds newKey to device, authorised by key.
func (c Cryptsetup) AddKey(ctx context.Context, p Params, device string, key, newKey []byte) error {
	return c.run(ctx, AddKeyArgs(p, Stdin, device, FD3), key, newKey)
}

// Open opens device as /dev/mapper/name.
func (c Cryptsetup) Open(ctx context.Context, device, name string, key []byte) error {
	return c.run(ctx, OpenArgs(Stdin, device, name, false), key, nil)
}

// Close closes /dev/mapper/name.
func (c Cryptsetup) Close(ctx context.Context, name string) error {
	return c.run(ctx, CloseArgs(name), nil, nil)
}

// TestKey reports whether key opens device, without creating a mapping.
func (c Cryptsetup) TestKey(ctx context.Context, device string, key []byte) error {
	return c.run(ctx, []string{"cryptsetup", "open", "--test-passphrase", "--key-file", Stdin, device}, key, nil)
}

// Unseal checks with luks.go, independently of cryptsetup, that key opens
// a keyslot of the header at path; it returns the keyslot.
func Unseal(path string, key []byte) (int, error) {
	dev, err := luksgo.Open(path)
	if err != nil {
		return -1, fmt.Errorf("cannot open LUKS header of %s: %w", path, err)
	}
	defer dev.Close()
	for _, slot := range dev.Slots() {
		if _, err := dev.UnsealVolume(slot, key); err == nil {
			return slot, nil
		}
	}
	return -1, fmt.Errorf("cannot unlock %s: the key opens no keyslot", path)
}

// Check compares a header read back from a device with the parameters it
// was formatted with; it lists every difference.
func Check(h *Header, p Params, minSlots int) error {
	var diffs []string
	want := func(what string, got, exp any) {
		if fmt.Sprint(got) != fmt.Sprint(exp) {
			diffs = append(diffs, fmt.Sprintf("%s is %v, want %v", what, got, exp))
		}
	}
	want("version", h.Version, 2)
	want("cipher", h.Cipher, p.Cipher)
	want("key size", h.KeySize, p.KeySize)
	want("sector size", h.SectorSize, p.SectorSize)
	if p.Label != "" {
		want("label", h.Label, p.Label)
	}
	if p.UUID != "" {
		want("UUID", h.UUID, p.UUID)
	}
	if p.Offset > 0 {
		want("data offset", h.DataOffset, uint64(p.Offset)*512)
	}
	if len(h.Keyslots) < minSlots {
		diffs = append(diffs, fmt.Sprintf("%d keyslot(s), want at least %d", len(h.Keyslots), minSlots))
	}
	for _, k := range h.Keyslots {
		want(fmt.Sprintf("keyslot %d PBKDF", k.ID), k.KDF, p.PBKDF)
		if p.Iterations > 0 && p.PBKDF != "pbkdf2" {
			want(fmt.Sprintf("keyslot %d argon2 time cost", k.ID), k.Time, p.Iterations)
		}
		if p.PBKDF != "pbkdf2" && p.MemoryKiB > 0 && k.MemoryKiB > p.MemoryKiB {
			diffs = append(diffs, fmt.Sprintf("keyslot %d argon2 memory is %d KiB, more than the %d planned", k.ID, k.MemoryKiB, p.MemoryKiB))
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("LUKS header does not match the plan: %s", strings.Join(diffs, "; "))
	}
	return nil
}

// ParamsFromArgs recovers the parameters from a luksFormat command line
// (as the planner wrote it), so apply can check a header against exactly
// what the plan said.
func ParamsFromArgs(argv []string) Params {
	var p Params
	for i := 0; i+1 < len(argv); i++ {
		v := argv[i+1]
		n, _ := strconv.Atoi(v)
		switch argv[i] {
		case "--cipher":
			p.Cipher = v
		case "--key-size":
			p.KeySize = n
		case "--hash":
			p.Hash = v
		case "--pbkdf":
			p.PBKDF = v
		case "--iter-time":
			p.IterTimeMs = n
		case "--pbkdf-memory":
			p.MemoryKiB = n
		case "--pbkdf-parallel":
			p.Parallel = n
		case "--pbkdf-force-iterations":
			p.Iterations = n
		case "--sector-size":
			p.SectorSize = n
		case "--label":
			p.Label = v
		case "--uuid":
			p.UUID = v
		case "--offset":
			p.Offset, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return p
}
