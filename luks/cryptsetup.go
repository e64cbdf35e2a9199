package luks

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	luksgo "github.com/anatol/luks.go"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
)

// KDF is how one keyslot stretches its key (cryptsetup --pbkdf and its
// cost). Keyslots of one volume may differ: a passphrase needs a slow,
// memory-hard argon2id; a key of 4096 random bytes does not (nothing
// brute-forces 2^32768 keys, whatever each guess costs).
type KDF struct {
	PBKDF      string `json:"pbkdf"` // argon2id, argon2i or pbkdf2
	IterTimeMs int    `json:"iterTimeMs,omitempty"`
	MemoryKiB  int    `json:"memoryKiB,omitempty"`
	Parallel   int    `json:"parallel,omitempty"`
	Iterations int    `json:"iterations,omitempty"` // >0: --pbkdf-force-iterations instead of benchmarking
}

// Argon2MinTime is the smallest argon2 time cost cryptsetup accepts
// (--pbkdf-force-iterations; lib/utils_pbkdf.c, 4).
const Argon2MinTime = 4

// KeyFileMemoryKiB is the argon2 memory of a keyslot opened by a key file:
// 64 MiB, the least that audits (verify's luks.kdf, after OWASP) accept
// for argon2 without a warning.
const KeyFileMemoryKiB = 64 << 10

// KeyFileKDF is the KDF of a keyslot opened by a key file of random bytes,
// given the KDF a layout asks for its passphrases. Stretching a key that
// has the full strength of the volume key adds nothing (nothing
// brute-forces 4096 random bytes, whatever each guess costs), while an
// argon2id slot at the passphrase cost takes up to 1 GiB of memory and 2 s
// per volume at every boot. So the slot gets argon2id at cryptsetup's
// least time cost and 64 MiB (never more than the layout asks): about a
// tenth of a second. It stays argon2id rather than pbkdf2 at 1000
// iterations, which would be as safe, because a LUKS header does not say
// which key a keyslot holds: an auditor (cryptshift verify, or anyone's
// luksDump) reading a captured header would have to report a pbkdf2 slot
// as weak. A layout that chose pbkdf2 (GRUB reads no argon2) keeps its
// own KDF.
func KeyFileKDF(pass KDF) KDF {
	if pass.PBKDF == "pbkdf2" {
		return pass
	}
	mem := KeyFileMemoryKiB
	if pass.MemoryKiB > 0 && pass.MemoryKiB < mem {
		mem = pass.MemoryKiB
	}
	return KDF{PBKDF: "argon2id", Iterations: Argon2MinTime, MemoryKiB: mem, Parallel: 1}
}

// Args renders the key-stretching options.
func (k KDF) Args() []string {
	args := []string{"--pbkdf", k.PBKDF}
	if k.Iterations > 0 {
		args = append(args, "--pbkdf-force-iterations", strconv.Itoa(k.Iterations))
	} else {
		args = append(args, "--iter-time", strconv.Itoa(k.IterTimeMs))
	}
	if k.PBKDF != "pbkdf2" {
		args = append(args, "--pbkdf-memory", strconv.Itoa(k.MemoryKiB), "--pbkdf-parallel", strconv.Itoa(k.Parallel))
	}
	return args
}

// String says what the KDF costs, for plans.
func (k KDF) String() string {
	mem := fmt.Sprintf("%d KiB", k.MemoryKiB)
	if k.MemoryKiB >= 1024 && k.MemoryKiB%1024 == 0 {
		mem = fmt.Sprintf("%d MiB", k.MemoryKiB/1024)
	}
	threads := "threads"
	if k.Parallel == 1 {
		threads = "thread"
	}
	switch {
	case k.PBKDF == "pbkdf2" && k.Iterations > 0:
		return fmt.Sprintf("pbkdf2, %d iterations", k.Iterations)
	case k.PBKDF == "pbkdf2":
		return fmt.Sprintf("pbkdf2, %d ms", k.IterTimeMs)
	case k.Iterations > 0:
		return fmt.Sprintf("%s, %d passes over %s, %d %s", k.PBKDF, k.Iterations, mem, k.Parallel, threads)
	}
	return fmt.Sprintf("%s, %d ms, up to %s, %d %s", k.PBKDF, k.IterTimeMs, mem, k.Parallel, threads)
}

// Params are the LUKS2 parameters of a volume, and the KDF of the keyslot
// it is formatted with. This is the one LUKS parameter type: plans,
// migrate journals and header checks all use it.
type Params struct {
	Cipher  string `json:"cipher"`
	KeySize int    `json:"keySize"` // bits
	Hash    string `json:"hash"`
	KDF
	SectorSize int    `json:"sectorSize"`
	Label      string `json:"label,omitempty"`
	UUID       string `json:"uuid,omitempty"`
	// Offset is the data offset in 512-byte sectors (luksFormat --offset;
	// cryptsetup wants a multiple of 8); 0 lets cryptsetup choose (16 MiB
	// with its default LUKS2 metadata and keyslot areas). Giving it makes
	// the size of the opened mapping exactly the device size minus it.
	Offset int64 `json:"offset,omitempty"`
}

// Stdin is the key-file argument that makes cryptsetup read a key from
// standard input; FD3 names the first extra descriptor. It is spelled with
// /proc/self/fd because /dev/fd is a symlink that udev or systemd create,
// absent from initramfs and rescue environments.
const (
	Stdin = "-"
	FD3   = "/proc/self/fd/3"
)

// Key says where cryptsetup reads a key: a key file, or a secret that the
// caller hands over on a pipe (named, never held: plans carry the name).
type Key struct {
	File   string `json:"file,omitempty"`
	Secret string `json:"secret,omitempty"`
}

func (k Key) arg(pipe string) string {
	if k.File != "" {
		return k.File
	}
	return pipe
}

// Op is a cryptsetup invocation rendered from typed parameters: the one
// place its command line is spelled, for plans, scripts and execution.
type Op interface{ Argv() []string }

// Format is luksFormat: a new LUKS2 header on Device whose first keyslot
// is opened by Key.
type Format struct {
	Device string `json:"device"`
	Params
	Key Key `json:"key"`
}

func (f Format) Argv() []string {
	p := f.Params
	args := []string{"cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2",
		"--cipher", p.Cipher, "--key-size", strconv.Itoa(p.KeySize), "--hash", p.Hash}
	args = append(args, p.KDF.Args()...)
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
	return append(args, "--key-file", f.Key.arg(Stdin), f.Device)
}

// AddKey adds NewKey to a new keyslot of Device with its own KDF,
// authorised by Key. A piped new key is read on fd 3.
type AddKey struct {
	Device string `json:"device"`
	KDF
	Key    Key `json:"key"`
	NewKey Key `json:"newKey"`
}

func (a AddKey) Argv() []string {
	args := []string{"cryptsetup", "luksAddKey", "--batch-mode"}
	args = append(args, a.KDF.Args()...)
	return append(args, "--key-file", a.Key.arg(Stdin), a.Device, a.NewKey.arg(FD3))
}

// Open opens a LUKS2 container as /dev/mapper/Name.
type Open struct {
	Device  string `json:"device"`
	Name    string `json:"name"`
	Key     Key    `json:"key"`
	Discard bool   `json:"discard,omitempty"`
}

func (o Open) Argv() []string {
	args := []string{"cryptsetup", "open", "--type", "luks2", "--key-file", o.Key.arg(Stdin)}
	if o.Discard {
		args = append(args, "--allow-discards")
	}
	return append(args, o.Device, o.Name)
}

// OpenPlain opens plain dm-crypt with a fresh random key: swap.
type OpenPlain struct {
	Device     string `json:"device"`
	Name       string `json:"name"`
	Cipher     string `json:"cipher"`
	KeySize    int    `json:"keySize"`
	SectorSize int    `json:"sectorSize"`
	Discard    bool   `json:"discard,omitempty"`
}

func (o OpenPlain) Argv() []string {
	args := []string{"cryptsetup", "open", "--type", "plain", "--cipher", o.Cipher, "--key-size", strconv.Itoa(o.KeySize),
		"--sector-size", strconv.Itoa(o.SectorSize), "--key-file", "/dev/urandom"}
	if o.Discard {
		args = append(args, "--allow-discards")
	}
	return append(args, o.Device, o.Name)
}

// Close closes /dev/mapper/Name.
type Close struct {
	Name string `json:"name"`
}

func (c Close) Argv() []string { return []string{"cryptsetup", "close", c.Name} }

// Resize grows the open mapping Name to its device's size.
type Resize struct {
	Name string `json:"name"`
	Key  Key    `json:"key"`
}

func (r Resize) Argv() []string {
	return []string{"cryptsetup", "resize", "--key-file", r.Key.arg(Stdin), r.Name}
}

// HeaderBackup writes a header backup file.
type HeaderBackup struct {
	Device string `json:"device"`
	File   string `json:"file"`
}

func (b HeaderBackup) Argv() []string {
	return []string{"cryptsetup", "luksHeaderBackup", "--batch-mode", b.Device, "--header-backup-file", b.File}
}

// ProbeFormat formats Image, a small scratch file, with argon2id at its
// least cost and the smallest metadata areas: doctor's proof that this
// cryptsetup can make LUKS2 headers with argon2id.
type ProbeFormat struct {
	Image string `json:"image"`
}

func (p ProbeFormat) Argv() []string {
	return []string{"cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "argon2id",
		"--pbkdf-force-iterations", "4", "--pbkdf-memory", "32",
		"--luks2-metadata-size", "16k", "--luks2-keyslots-size", "512k",
		"--key-file", Stdin, p.Image}
}

// TestKey checks that the piped key opens Device, without a mapping.
type TestKey struct {
	Device string `json:"device"`
}

func (t TestKey) Argv() []string {
	return []string{"cryptsetup", "open", "--test-passphrase", "--key-file", Stdin, t.Device}
}

// Cryptsetup runs cryptsetup through the exec door. Keys go on stdin or
// fd 3, never in argv.
type Cryptsetup struct {
	Run execx.Runner
}

// Do runs op; stdin and fd3 carry the piped keys it reads (nil: none).
func (c Cryptsetup) Do(ctx context.Context, op Op, stdin, fd3 []byte) error {
	argv := op.Argv()
	cmd := execx.Cmd{Tool: argv[0], Args: argv[1:], Stdin: stdin}
	if fd3 != nil {
		cmd.ExtraFiles = [][]byte{fd3}
	}
	_, err := c.Run.Run(ctx, cmd)
	return err
}

// Format formats device with a key given as bytes.
func (c Cryptsetup) Format(ctx context.Context, p Params, device string, key []byte) error {
	return c.Do(ctx, Format{Device: device, Params: p}, key, nil)
}

// AddKey adds newKey to device in a keyslot with the given KDF,
// authorised by key.
func (c Cryptsetup) AddKey(ctx context.Context, k KDF, device string, key, newKey []byte) error {
	return c.Do(ctx, AddKey{Device: device, KDF: k}, key, newKey)
}

// Open opens device as /dev/mapper/name.
func (c Cryptsetup) Open(ctx context.Context, device, name string, key []byte) error {
	return c.Do(ctx, Open{Device: device, Name: name}, key, nil)
}

// Close closes /dev/mapper/name.
func (c Cryptsetup) Close(ctx context.Context, name string) error {
	return c.Do(ctx, Close{Name: name}, nil, nil)
}

// TestKey reports whether key opens device, without creating a mapping.
func (c Cryptsetup) TestKey(ctx context.Context, device string, key []byte) error {
	return c.Do(ctx, TestKey{Device: device}, key, nil)
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
		if v, err := dev.UnsealVolume(slot, key); err == nil {
			wipeVolumeKey(v)
			return slot, nil
		}
	}
	return -1, fmt.Errorf("cannot unlock %s: the key opens no keyslot", path)
}

// wipeVolumeKey zeroes the volume key luks.go hands back inside a Volume
// (an unexported field, and luks.go has no method to clear it): Unseal
// only needs to know that a keyslot opens, and the key must not stay on
// the heap until the collector reuses it. It reports false when the field
// is not there (a luks.go update renamed it: TestWipeVolumeKey fails).
// What it cannot reach: luks.go's own intermediate buffers (the derived
// keyslot key, the anti-forensic split material) stay unwiped on the Go
// heap until reused; docs/DEVELOPING.md lists the limit.
func wipeVolumeKey(v *luksgo.Volume) bool {
	if v == nil {
		return false
	}
	f := reflect.ValueOf(v).Elem().FieldByName("key")
	if !f.IsValid() || f.Kind() != reflect.Slice || f.Type().Elem().Kind() != reflect.Uint8 {
		return false
	}
	b := f.Bytes() // shares the field's backing array
	for i := range b {
		b[i] = 0
	}
	return true
}

// CheckVolume compares a header read back from a device with the volume
// parameters it was formatted with; it lists every difference.
func CheckVolume(h *Header, p Params) error {
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
	if len(diffs) > 0 {
		return fmt.Errorf("LUKS header does not match the plan: %s", strings.Join(diffs, "; "))
	}
	return nil
}

// CheckKeyslot compares keyslot id of a header with the KDF it was made
// with. cryptsetup may lower argon2's memory on a machine with little RAM,
// never raise it.
func CheckKeyslot(h *Header, id int, k KDF) error {
	var slot *Keyslot
	for i := range h.Keyslots {
		if h.Keyslots[i].ID == id {
			slot = &h.Keyslots[i]
		}
	}
	if slot == nil {
		return fmt.Errorf("LUKS header has no active keyslot %d", id)
	}
	var diffs []string
	if slot.KDF != k.PBKDF {
		diffs = append(diffs, fmt.Sprintf("PBKDF is %s, want %s", slot.KDF, k.PBKDF))
	}
	switch {
	case k.Iterations > 0 && k.PBKDF == "pbkdf2" && slot.Iterations != k.Iterations:
		diffs = append(diffs, fmt.Sprintf("pbkdf2 iterations are %d, want %d", slot.Iterations, k.Iterations))
	case k.Iterations > 0 && k.PBKDF != "pbkdf2" && slot.Time != k.Iterations:
		diffs = append(diffs, fmt.Sprintf("argon2 time cost is %d, want %d", slot.Time, k.Iterations))
	}
	if k.PBKDF != "pbkdf2" && k.MemoryKiB > 0 && slot.MemoryKiB > k.MemoryKiB {
		diffs = append(diffs, fmt.Sprintf("argon2 memory is %d KiB, more than the %d planned", slot.MemoryKiB, k.MemoryKiB))
	}
	if len(diffs) > 0 {
		return fmt.Errorf("LUKS keyslot %d does not match the plan: %s", id, strings.Join(diffs, "; "))
	}
	return nil
}
