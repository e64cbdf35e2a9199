package migrate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/hostview/blockstack/blockstacktest"
	"github.com/cryptshift/cryptshift/luks"
)

// fakeSys models the host side of a vg: target for unit tests: lvm (one
// volume group vg0 on /dev/sdb), cryptsetup (headers it writes are real
// LUKS2 metadata that luks.ReadHeader validates; keys are checked like
// cryptsetup would) and the sysfs tree that blockstack reads under Root,
// where LVs and mappings appear and disappear as the commands say. A
// mapping's node is a file holding the decrypted view, kept across
// close and open.
type fakeSys struct {
	mu     sync.Mutex
	root   string
	tree   *blockstacktest.Tree
	extent int64
	free   int64 // extents
	lvs    map[string]*fakeLV
	maps   map[string]*fakeMap
	next   int
	cmds   []execx.Cmd
	// failOn makes the first command whose line starts with the key fail.
	failOn map[string]error
	// after runs once after the first successful command whose line
	// starts with the key (a crash right after it, for instance).
	after map[string]func()
}

type fakeLV struct {
	name, dm string
	size     int64
	uuid     string // "" until formatted
	params   luks.Params
	kdfs     []luks.KDF // per keyslot
	keys     [][]byte
}

type fakeMap struct{ name, dm, lv string }

func newFakeSys(t *testing.T, root string, freeExtents int64) *fakeSys {
	t.Helper()
	tr := blockstacktest.New(root)
	// The root filesystem is on dm-crypt: key files and overlays under any
	// path are on encrypted storage unless a test mounts something else.
	tr.Disk("sda", "8:0", 20<<30)
	tr.Crypt("dm-0", "253:0", "LUKS2", "root_crypt", 20<<30, "sda")
	tr.Mount("/", "ext4", "/dev/mapper/root_crypt", "253:0", "rw")
	tr.Disk("sdb", "8:16", 1<<30) // vg0's PV
	tr.Disk("sdc", "8:32", 1<<30) // plaintext, for tests that mount it
	if err := tr.Finish(); err != nil {
		t.Fatal(err)
	}
	return &fakeSys{root: root, tree: tr, extent: 4 << 20, free: freeExtents, lvs: map[string]*fakeLV{},
		maps: map[string]*fakeMap{}, next: 10, failOn: map[string]error{}, after: map[string]func(){}}
}

func (f *fakeSys) host(p string) string { return filepath.Join(f.root, p) }

// lines returns the recorded command lines (no secret is ever in them).
func (f *fakeSys) lines() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.cmds {
		out = append(out, c.String())
	}
	return out
}

func (f *fakeSys) Run(ctx context.Context, c execx.Cmd) (execx.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = append(f.cmds, c)
	line := c.String()
	for prefix, err := range f.failOn {
		if strings.HasPrefix(line, prefix) {
			delete(f.failOn, prefix)
			return execx.Result{ExitCode: 1}, &execx.Error{Cmd: line, ExitCode: 1, Stderr: err.Error(), Err: err}
		}
	}
	out, err := f.do(c)
	if err != nil {
		return execx.Result{ExitCode: 1}, &execx.Error{Cmd: line, ExitCode: 1, Stderr: err.Error(), Err: err}
	}
	for prefix, fn := range f.after {
		if strings.HasPrefix(line, prefix) {
			delete(f.after, prefix)
			fn()
		}
	}
	return execx.Result{Stdout: out}, nil
}

func fakeArgAfter(args []string, flag string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			return args[i+1]
		}
	}
	return ""
}

func (f *fakeSys) do(c execx.Cmd) ([]byte, error) {
	a := c.Args
	switch c.Tool {
	case "lvm":
		sub := a[0]
		if len(a) > 2 && a[1] == "--config" {
			a = append([]string{sub}, a[3:]...)
		}
		return f.lvm(sub, a[1:])
	case "cryptsetup":
		return nil, f.cryptsetup(a[0], a[1:], c)
	case "blkdiscard":
		return nil, nil
	}
	return nil, fmt.Errorf("fakeSys: unexpected tool %s", c.Tool)
}

func (f *fakeSys) lvm(sub string, a []string) ([]byte, error) {
	switch sub {
	case "vgs":
		used := int64(0)
		for _, lv := range f.lvs {
			used += lv.size / f.extent
		}
		total := used + f.free
		return []byte(fmt.Sprintf(`{"report":[{"vg":[{"vg_name":"vg0","vg_uuid":"u","vg_size":"%d","vg_free":"%d","vg_extent_size":"%d","vg_extent_count":"%d","vg_free_count":"%d"}]}]}`,
			total*f.extent, f.free*f.extent, f.extent, total, f.free)), nil
	case "lvs":
		var rows []string
		for _, lv := range f.lvs {
			rows = append(rows, fmt.Sprintf(`{"vg_name":"vg0","lv_name":%q,"lv_path":"/dev/vg0/%s","lv_dm_path":"/dev/mapper/%s","lv_uuid":"x","lv_size":"%d","lv_active":"active","origin":""}`,
				lv.name, lv.name, blockstacktest.DMName("vg0", lv.name), lv.size))
		}
		return []byte(`{"report":[{"lv":[` + strings.Join(rows, ",") + `]}]}`), nil
	case "lvcreate":
		name := fakeArgAfter(a, "--name")
		n, _ := strconv.ParseInt(fakeArgAfter(a, "--extents"), 10, 64)
		if a[len(a)-1] != "vg0" {
			return nil, fmt.Errorf("Volume group %q not found", a[len(a)-1])
		}
		if f.lvs[name] != nil {
			return nil, fmt.Errorf("Logical Volume %q already exists in volume group \"vg0\"", name)
		}
		if n > f.free {
			return nil, errors.New("Volume group \"vg0\" has insufficient free space")
		}
		f.free -= n
		lv := &fakeLV{name: name, dm: f.dmName(), size: n * f.extent}
		f.lvs[name] = lv
		f.tree.LV(lv.dm, "253:"+lv.dm[3:], "vg0", name, uint64(lv.size), "sdb")
		if err := f.tree.Err(); err != nil {
			return nil, err
		}
		return nil, os.Truncate(f.host("/dev/"+lv.dm), lv.size)
	case "lvremove":
		_, name, _ := strings.Cut(a[len(a)-1], "/")
		lv := f.lvs[name]
		if lv == nil {
			return nil, fmt.Errorf("Failed to find logical volume %q", a[len(a)-1])
		}
		for _, m := range f.maps {
			if m.lv == name {
				return nil, fmt.Errorf("Logical volume vg0/%s in use", name)
			}
		}
		delete(f.lvs, name)
		f.free += lv.size / f.extent
		f.removeDM(lv.dm, blockstacktest.DMName("vg0", name), "/dev/vg0/"+name, "sdb")
		return nil, nil
	case "lvchange":
		return nil, nil
	}
	return nil, fmt.Errorf("fakeSys: unexpected lvm %s", sub)
}

func (f *fakeSys) dmName() string {
	f.next++
	return fmt.Sprintf("dm-%d", f.next)
}

// removeDM takes a device-mapper device out of the tree.
func (f *fakeSys) removeDM(dm, dmName, link, slave string) {
	for _, p := range []string{"/sys/class/block/" + dm, "/sys/devices/virtual/block/" + dm, "/dev/" + dm,
		"/dev/mapper/" + dmName, link} {
		if p != "" {
			os.RemoveAll(f.host(p))
		}
	}
	if strings.HasPrefix(slave, "dm-") {
		os.Remove(f.host("/sys/devices/virtual/block/" + slave + "/holders/" + dm))
	} else {
		os.Remove(f.host("/sys/devices/pci0000:00/0000:00:01.0/block/" + slave + "/holders/" + dm))
	}
}

func (f *fakeSys) lvOfDevice(dev string) *fakeLV {
	name, ok := strings.CutPrefix(dev, "/dev/vg0/")
	if !ok {
		return nil
	}
	return f.lvs[name]
}

func hasKey(lv *fakeLV, k []byte) bool {
	for _, x := range lv.keys {
		if bytes.Equal(x, k) {
			return true
		}
	}
	return false
}

func (f *fakeSys) cryptsetup(sub string, a []string, c execx.Cmd) error {
	switch sub {
	case "luksFormat":
		lv := f.lvOfDevice(a[len(a)-1])
		if lv == nil {
			return fmt.Errorf("Device %s does not exist or access denied.", a[len(a)-1])
		}
		if fakeArgAfter(a, "--key-file") != luks.Stdin || len(c.Stdin) == 0 {
			return errors.New("fakeSys: luksFormat without a key on stdin")
		}
		lv.params = fakeLUKSParams(a)
		lv.kdfs = []luks.KDF{lv.params.KDF}
		lv.uuid = lv.params.UUID
		lv.keys = [][]byte{append([]byte(nil), c.Stdin...)}
		// The decrypted view of fresh LUKS2 data decrypts noise.
		plain := f.host("/fake/" + lv.name + ".plain")
		os.MkdirAll(filepath.Dir(plain), 0o755)
		if err := os.WriteFile(plain, bytes.Repeat([]byte{0xa5}, int(lv.size-lv.params.Offset*512)), 0o600); err != nil {
			return err
		}
		return writeFakeLUKS2(f.host("/dev/"+lv.dm), lv.uuid, lv.params, lv.kdfs)
	case "luksAddKey":
		lv := f.lvOfDevice(a[len(a)-2])
		if lv == nil || lv.uuid == "" {
			return errors.New("Device is not a valid LUKS device.")
		}
		if !hasKey(lv, c.Stdin) {
			return errors.New("No key available with this passphrase.")
		}
		if a[len(a)-1] != luks.FD3 || len(c.ExtraFiles) != 1 {
			return errors.New("fakeSys: luksAddKey without the new key on fd 3")
		}
		lv.keys = append(lv.keys, append([]byte(nil), c.ExtraFiles[0]...))
		lv.kdfs = append(lv.kdfs, fakeLUKSParams(a).KDF)
		return writeFakeLUKS2(f.host("/dev/"+lv.dm), lv.uuid, lv.params, lv.kdfs)
	case "open":
		test := a[0] == "--test-passphrase"
		dev := a[len(a)-1]
		if !test {
			dev = a[len(a)-2]
		}
		lv := f.lvOfDevice(dev)
		if lv == nil || lv.uuid == "" {
			return errors.New("Device is not a valid LUKS device.")
		}
		if !hasKey(lv, c.Stdin) {
			return errors.New("No key available with this passphrase.")
		}
		if test {
			return nil
		}
		name := a[len(a)-1]
		if f.maps[name] != nil {
			return fmt.Errorf("Device %s already exists.", name)
		}
		m := &fakeMap{name: name, dm: f.dmName(), lv: lv.name}
		size := lv.size - lv.params.Offset*512
		f.tree.DM(m.dm, "253:"+m.dm[3:], name, "CRYPT-LUKS2-"+strings.ReplaceAll(lv.uuid, "-", "")+"-"+name, uint64(size), lv.dm)
		if err := f.tree.Err(); err != nil {
			return err
		}
		// The node is the decrypted view of the LV.
		node := f.host("/dev/" + m.dm)
		os.Remove(node)
		if err := os.Symlink("../fake/"+lv.name+".plain", node); err != nil {
			return err
		}
		f.maps[name] = m
		return nil
	case "close":
		m := f.maps[a[len(a)-1]]
		if m == nil {
			return fmt.Errorf("Device %s is not active.", a[len(a)-1])
		}
		delete(f.maps, m.name)
		f.removeDM(m.dm, m.name, "", f.lvs[m.lv].dm)
		return nil
	}
	return fmt.Errorf("fakeSys: unexpected cryptsetup %s", sub)
}

// fakeLUKSParams reads what the fake cryptsetup was asked for from its
// command line (the fake is the tool: parsing argv is its job).
func fakeLUKSParams(a []string) luks.Params {
	var p luks.Params
	for i := 0; i+1 < len(a); i++ {
		v := a[i+1]
		n, _ := strconv.Atoi(v)
		switch a[i] {
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
		case "--uuid":
			p.UUID = v
		case "--offset":
			p.Offset, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return p
}

// writeFakeLUKS2 writes a LUKS2 primary header (binary header and JSON
// metadata, checksummed as cryptsetup does) with the given UUID,
// parameters and a keyslot per KDF; the keyslot areas hold nothing.
func writeFakeLUKS2(path, uuid string, p luks.Params, kdfs []luks.KDF) error {
	const hdrSize = 16384
	keyslots := map[string]any{}
	var ids []string
	for i, k := range kdfs {
		id := strconv.Itoa(i)
		ids = append(ids, id)
		kdf := map[string]any{"type": k.PBKDF, "salt": ""}
		if k.PBKDF == "pbkdf2" {
			kdf["hash"], kdf["iterations"] = "sha256", max(k.Iterations, 1000)
		} else {
			kdf["time"], kdf["memory"], kdf["cpus"] = max(k.Iterations, 4), k.MemoryKiB, k.Parallel
		}
		keyslots[id] = map[string]any{"type": "luks2", "key_size": p.KeySize / 8,
			"af":   map[string]any{"type": "luks1", "stripes": 4000, "hash": "sha256"},
			"area": map[string]any{"type": "raw", "encryption": p.Cipher, "key_size": p.KeySize / 8, "offset": strconv.Itoa(32768 + i*258048), "size": "258048"},
			"kdf":  kdf}
	}
	meta := map[string]any{
		"keyslots": keyslots,
		"tokens":   map[string]any{},
		"segments": map[string]any{"0": map[string]any{"type": "crypt", "offset": strconv.FormatInt(p.Offset*512, 10),
			"size": "dynamic", "iv_tweak": "0", "encryption": p.Cipher, "sector_size": p.SectorSize}},
		"digests": map[string]any{"0": map[string]any{"type": "pbkdf2", "keyslots": ids, "segments": []string{"0"},
			"hash": "sha256", "iterations": 1000, "salt": "", "digest": ""}},
		"config": map[string]any{"json_size": "12288", "keyslots_size": "16744448"},
	}
	js, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	hdr := make([]byte, hdrSize)
	copy(hdr, "LUKS\xba\xbe")
	binary.BigEndian.PutUint16(hdr[6:], 2)
	binary.BigEndian.PutUint64(hdr[8:], hdrSize)
	binary.BigEndian.PutUint64(hdr[16:], 1)
	copy(hdr[72:], "sha256")
	copy(hdr[168:], uuid)
	copy(hdr[4096:], js)
	sum := sha256.Sum256(hdr)
	copy(hdr[448:], sum[:])
	fh, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer fh.Close()
	_, err = fh.WriteAt(hdr, 0)
	return err
}
