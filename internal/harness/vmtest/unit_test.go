package vmtest

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseShowDepends(t *testing.T) {
	const dir = "/c/root/lib/modules/6.1.0-56-amd64"
	tests := []struct {
		name    string
		out     string
		want    []ModuleStep
		wantErr string
	}{{
		name: "dependencies first, params ignored",
		out: "insmod /c/root/lib/modules/6.1.0-56-amd64/kernel/drivers/md/dm-mod.ko \n" +
			"insmod /c/root/lib/modules/6.1.0-56-amd64/kernel/drivers/md/dm-crypt.ko foo=1\n",
		want: []ModuleStep{
			{Name: "dm_mod", Path: "kernel/drivers/md/dm-mod.ko"},
			{Name: "dm_crypt", Path: "kernel/drivers/md/dm-crypt.ko"},
		},
	}, {
		name: "built in",
		out:  "builtin cbc\n",
		want: []ModuleStep{{Name: "cbc", Builtin: true}},
	}, {
		name:    "path outside the tree",
		out:     "insmod /lib/modules/6.1.0-56-amd64/kernel/x.ko\n",
		wantErr: "outside",
	}, {
		name:    "unexpected line",
		out:     "modprobe: FATAL: Module nope not found\n",
		wantErr: "unexpected line",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseShowDepends([]byte(tt.out), dir)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestMergeModuleSteps(t *testing.T) {
	dm := ModuleStep{Name: "dm_mod", Path: "kernel/drivers/md/dm-mod.ko"}
	crypt := ModuleStep{Name: "dm_crypt", Path: "kernel/drivers/md/dm-crypt.ko"}
	snap := ModuleStep{Name: "dm_snapshot", Path: "kernel/drivers/md/dm-snapshot.ko"}
	bufio := ModuleStep{Name: "dm_bufio", Path: "kernel/drivers/md/dm-bufio.ko"}
	sha := ModuleStep{Name: "sha512_generic", Path: "kernel/crypto/sha512_generic.ko"}
	tests := []struct {
		name  string
		lists [][]ModuleStep
		want  []ModuleStep
	}{
		{"shared dependency loaded once, first place wins",
			[][]ModuleStep{{dm, crypt}, {dm, bufio, snap}}, []ModuleStep{dm, crypt, bufio, snap}},
		{"built-ins dropped",
			[][]ModuleStep{{{Name: "cbc", Builtin: true}}, {dm}}, []ModuleStep{dm}},
		// modprobe lists a soft dependency again after the module itself.
		{"softdep repeated within one list",
			[][]ModuleStep{{sha, {Name: "sha512_ssse3", Path: "kernel/arch/x86/crypto/sha512-ssse3.ko"}, sha}},
			[]ModuleStep{sha, {Name: "sha512_ssse3", Path: "kernel/arch/x86/crypto/sha512-ssse3.ko"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := MergeModuleSteps(tt.lists...); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestPickKernelPackage(t *testing.T) {
	tests := []struct {
		name, out, want string
	}{
		{"generic", "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n", "linux-image-6.1.0-56-amd64"},
		{"cloud flavour skipped", "x\n  Depends: linux-image-6.1.0-56-cloud-amd64\n  Depends: linux-image-6.1.0-56-amd64\n", "linux-image-6.1.0-56-amd64"},
		{"first alternative", "x\n |Depends: linux-image-6.1.0-57-amd64\n  Depends: linux-image-6.1.0-56-amd64\n", "linux-image-6.1.0-57-amd64"},
		{"virtual package skipped", "x\n  Depends: <linux-image-6.1.0-1-amd64>\n  Depends: linux-image-6.1.0-2-amd64\n", "linux-image-6.1.0-2-amd64"},
		{"none", "x\n  Recommends: firmware-linux-free\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pickKernelPackage([]byte(tt.out))
			if tt.want == "" {
				if err == nil {
					t.Fatalf("got %q, want an error", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestDebField(t *testing.T) {
	show := "Package: linux-image-6.1.0-56-amd64\nVersion: 6.1.192-2\nDescription: x\n\nPackage: y\nVersion: 9\n"
	tests := []struct{ field, want string }{{"Version", "6.1.192-2"}, {"Package", "linux-image-6.1.0-56-amd64"}, {"Missing", ""}}
	for _, tt := range tests {
		got, err := debField([]byte(show), tt.field)
		if got != tt.want || (tt.want == "") != (err != nil) {
			t.Errorf("debField(%s): got %q, %v; want %q", tt.field, got, err, tt.want)
		}
	}
}

func TestKitKey(t *testing.T) {
	base := kitKey("linux-image-6.1.0-56-amd64=6.1.192-2", []string{"loop", "dm-crypt"}, "init", []byte("bb"))
	tests := []struct {
		name string
		key  string
	}{
		{"kernel", kitKey("linux-image-6.1.0-57-amd64=6.1.193-1", []string{"loop", "dm-crypt"}, "init", []byte("bb"))},
		{"modules", kitKey("linux-image-6.1.0-56-amd64=6.1.192-2", []string{"loop", "dm-crypt", "xfs"}, "init", []byte("bb"))},
		{"scripts", kitKey("linux-image-6.1.0-56-amd64=6.1.192-2", []string{"loop", "dm-crypt"}, "init2", []byte("bb"))},
		{"busybox", kitKey("linux-image-6.1.0-56-amd64=6.1.192-2", []string{"loop", "dm-crypt"}, "init", []byte("bb2"))},
	}
	for _, tt := range tests {
		if tt.key == base {
			t.Errorf("changing the %s kept the kit key %s", tt.name, base)
		}
	}
	if again := kitKey("linux-image-6.1.0-56-amd64=6.1.192-2", []string{"loop", "dm-crypt"}, "init", []byte("bb")); again != base {
		t.Errorf("same inputs: got key %s, want %s", again, base)
	}
}

func TestHasELFNote(t *testing.T) {
	note := func(name string, typ uint32, desc []byte) []byte {
		var b bytes.Buffer
		n := append([]byte(name), 0)
		binary.Write(&b, binary.LittleEndian, [3]uint32{uint32(len(n)), uint32(len(desc)), typ})
		b.Write(n)
		b.Write(make([]byte, int(align4(uint32(len(n))))-len(n)))
		b.Write(desc)
		b.Write(make([]byte, int(align4(uint32(len(desc))))-len(desc)))
		return b.Bytes()
	}
	pvh := note("Xen", xenElfnotePhys32Entry, []byte{0, 0, 0, 1, 0, 0, 0, 0})
	tests := []struct {
		name string
		seg  []byte
		want bool
	}{
		{"PVH note after others", append(note("Xen", 6, []byte("linux")), pvh...), true},
		{"other Xen notes only", note("Xen", 6, []byte("linux")), false},
		{"same type, other owner", note("GNU", xenElfnotePhys32Entry, []byte{1, 2, 3, 4}), false},
		{"truncated", pvh[:len(pvh)-4], false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		if got := hasELFNote(tt.seg, "Xen", xenElfnotePhys32Entry); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestGuestEnv(t *testing.T) {
	host := []string{"PATH=/usr/local/go/bin:/usr/bin:/bin", "HOME=/home/dev", "SSH_AUTH_SOCK=/tmp/agent",
		"GOCACHE=/home/dev/.cache/go-build", "CRYPTSHIFT_TEST_VM=1", "CI=true", "DISPLAY=:0"}
	env := guestEnv(host, []string{"HOME=/root", "FOO=a=b"})
	got := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = v
	}
	tests := []struct{ key, want string }{
		{"PATH", "/usr/local/go/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"},
		{"HOME", "/root"}, // the caller's extra wins over the host
		{"GOCACHE", "/home/dev/.cache/go-build"},
		{"CRYPTSHIFT_TEST_VM", "1"},
		{"CRYPTSHIFT_IN_VM", "1"},
		{"DM_DISABLE_UDEV", "1"},
		{"CI", "true"},
		{"FOO", "a=b"},
		{"SSH_AUTH_SOCK", ""},
		{"DISPLAY", ""},
	}
	for _, tt := range tests {
		if got[tt.key] != tt.want {
			t.Errorf("%s: got %q, want %q", tt.key, got[tt.key], tt.want)
		}
	}
	if !sortedStrings(env) {
		t.Errorf("environment not sorted: %q", env)
	}
}

func sortedStrings(s []string) bool {
	for i := 1; i < len(s); i++ {
		if s[i-1] > s[i] {
			return false
		}
	}
	return true
}

// TestShellQuote runs the quoted words through a real sh and checks they
// arrive unchanged: the run script depends on it for argv and env.
func TestShellQuote(t *testing.T) {
	words := []string{"plain", "", "two words", "it's", `"dq"`, "$HOME", "`id`", "a\nb", "-n", "*", "back\\slash", "ünï"}
	script := "for a in"
	for _, w := range words {
		script += " " + shellQuote(w)
	}
	script += `; do printf '%s\0' "$a"; done`
	out, err := exec.Command("/bin/sh", "-c", script).Output()
	if err != nil {
		t.Fatalf("sh: %v", err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if !reflect.DeepEqual(got, words) {
		t.Errorf("got %q, want %q", got, words)
	}
}

func TestRunScript(t *testing.T) {
	tests := []struct {
		name          string
		dir, share    string
		want, notWant []string
	}{
		{"no share", "/work/main/vmtest", "", []string{"cd /work/main/vmtest ||", "env -i -- A=1 'B=two words' go test '-run=^T$'", "echo $? >/run/vmtest/status", "tee /run/vmtest/output"}, []string{"mount", "hostwork"}},
		{"share", "/work/main/vmtest", "/tmp/share dir", []string{"mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 share '/tmp/share dir'", "umount '/tmp/share dir'"}, []string{"hostwork"}},
		// A checkout under /tmp: the guest's /tmp is its own tmpfs.
		{"dir under /tmp", "/tmp/ci clone/vmtest", "", []string{"mkdir -p $w/lower $w/upper $w/work '/tmp/ci clone' ||",
			"ro,cache=loose hostwork $w/lower ||", "upperdir=$w/upper,workdir=$w/work overlay '/tmp/ci clone' ||", "cd '/tmp/ci clone/vmtest' ||"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := runScript([]string{"go", "test", "-run=^T$"}, []string{"A=1", "B=two words"}, tt.dir, tt.share)
			for _, w := range tt.want {
				if !strings.Contains(s, w) {
					t.Errorf("script lacks %q:\n%s", w, s)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(s, w) {
					t.Errorf("script contains %q:\n%s", w, s)
				}
			}
			shSyntax(t, s)
		})
	}
}

func TestHostTmpTop(t *testing.T) {
	for dir, want := range map[string]string{
		"/tmp/ci-clone":              "/tmp/ci-clone",
		"/tmp/ci-clone/cmd/cs":       "/tmp/ci-clone",
		"/tmp/ci-clone/../x/y":       "/tmp/x",
		"/tmp":                       "",
		"/tmpfoo/x":                  "",
		"/work/main":                 "",
		"/var/tmp/x":                 "",
		"/tmp/../work/main/cmd/tool": "",
	} {
		if got := hostTmpTop(dir); got != want {
			t.Errorf("hostTmpTop(%q) = %q, want %q", dir, got, want)
		}
	}
	args := strings.Join(qemuArgs(&Kit{}, Options{Dir: "/tmp/ci-clone/cmd"}, "/tmp/run"), " ")
	if !strings.Contains(args, "local,path=/tmp/ci-clone,mount_tag=hostwork,security_model=none,readonly=on") {
		t.Errorf("qemu args do not share /tmp/ci-clone read-only: %s", args)
	}
	if args := strings.Join(qemuArgs(&Kit{}, Options{Dir: "/work/main"}, "/tmp/run"), " "); strings.Contains(args, "hostwork") {
		t.Errorf("qemu args share a hostwork directory for /work/main: %s", args)
	}
}

// TestScriptsParse checks the generated /init and payload with the shells
// that run them: busybox sh in the initramfs, the host's /bin/sh (dash)
// for the run script (covered by TestRunScript).
func TestScriptsParse(t *testing.T) {
	tests := []struct{ name, script string }{
		{"init", initScript("6.1.0-56-amd64")},
		{"runner payload", "KVER=6.1.0-56-amd64\n" + runnerPayload},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := os.Stat(busyboxPath); err != nil {
				t.Skipf("busybox-static not installed: %v", err)
			}
			f := filepath.Join(t.TempDir(), "s")
			os.WriteFile(f, []byte(tt.script), 0o644)
			if out, err := exec.Command(busyboxPath, "sh", "-n", f).CombinedOutput(); err != nil {
				t.Errorf("busybox sh -n: %v\n%s", err, out)
			}
		})
	}
	for _, w := range []string{"insmod \"/lib/modules/$KVER/$m\"", "sh /etc/vmtest/payload", "poweroff -f"} {
		if !strings.Contains(initScript("6.1.0-56-amd64"), w) {
			t.Errorf("init lacks %q", w)
		}
	}
}

func shSyntax(t *testing.T, s string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "s")
	os.WriteFile(f, []byte(s), 0o644)
	if out, err := exec.Command("/bin/sh", "-n", f).CombinedOutput(); err != nil {
		t.Errorf("sh -n: %v\n%s\n%s", err, out, s)
	}
}

// TestCPIO reads the archive back with a newc parser written from the
// format description, and checks it is reproducible.
func TestCPIO(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "bin"), 0o755)
	os.WriteFile(filepath.Join(root, "init"), []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(root, "bin", "odd"), []byte("12345"), 0o644)
	os.Symlink("odd", filepath.Join(root, "bin", "link"))
	extra := []cpioEntry{{Name: "dev/console", Mode: cpioModeChr | 0o600, RdevMajor: 5, RdevMinor: 1}}
	var a, b bytes.Buffer
	if err := writeCPIO(&a, root, extra); err != nil {
		t.Fatal(err)
	}
	writeCPIO(&b, root, extra)
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two archives of the same tree differ")
	}
	type entry struct {
		mode         uint32
		data         string
		rmaj, rminor uint32
	}
	got := map[string]entry{}
	var order []string
	buf := a.Bytes()
	for off := 0; ; {
		if len(buf)-off < 110 || string(buf[off:off+6]) != "070701" {
			t.Fatalf("bad header at %d", off)
		}
		field := func(i int) uint32 {
			v, _ := strconv.ParseUint(string(buf[off+6+8*i:off+14+8*i]), 16, 32)
			return uint32(v)
		}
		mode, size, rmaj, rmin, nsize := field(1), field(6), field(9), field(10), field(11)
		name := string(buf[off+110 : off+110+int(nsize)-1])
		off = int(align4(uint32(off + 110 + int(nsize))))
		data := string(buf[off : off+int(size)])
		off = int(align4(uint32(off + int(size))))
		if name == "TRAILER!!!" {
			if off != len(buf) {
				t.Errorf("%d bytes after the trailer", len(buf)-off)
			}
			break
		}
		got[name] = entry{mode, data, rmaj, rmin}
		order = append(order, name)
	}
	want := map[string]entry{
		"bin":         {cpioModeDir | 0o755, "", 0, 0},
		"bin/link":    {cpioModeLink | 0o777, "odd", 0, 0},
		"bin/odd":     {cpioModeFile | 0o644, "12345", 0, 0},
		"init":        {cpioModeFile | 0o755, "#!/bin/sh\n", 0, 0},
		"dev/console": {cpioModeChr | 0o600, "", 5, 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	// A directory must come before what it contains.
	if order[0] != "bin" {
		t.Errorf("order: got %q, want bin first", order)
	}
}

func TestParseTestOutput(t *testing.T) {
	out := `=== RUN   TestVMA
    a_test.go:10: hello from A
--- PASS: TestVMA (1.00s)
=== RUN   TestVMB
=== RUN   TestVMB/sub
    b_test.go:5: in sub
=== NAME  TestVMB
    b_test.go:9: after sub
--- FAIL: TestVMB (0.50s)
    --- FAIL: TestVMB/sub (0.10s)
=== RUN   TestVMC
    c_test.go:3: no dm here
--- SKIP: TestVMC (0.00s)
=== RUN   TestVMD
panic: boom
FAIL	github.com/cryptshift/cryptshift/x	3.2s
`
	got := parseTestOutput([]byte(out))
	tests := []struct {
		name, status string
		has, hasNot  []string
	}{
		{"TestVMA", "PASS", []string{"hello from A", "--- PASS: TestVMA"}, []string{"TestVMB"}},
		{"TestVMB", "FAIL", []string{"in sub", "after sub", "--- FAIL: TestVMB/sub"}, []string{"hello from A"}},
		{"TestVMB/sub", "FAIL", []string{"in sub"}, []string{"after sub"}},
		{"TestVMC", "SKIP", []string{"no dm here"}, nil},
		{"TestVMD", "", []string{"panic: boom"}, nil},
	}
	for _, tt := range tests {
		g := got[tt.name]
		if g == nil {
			t.Errorf("%s: no entry", tt.name)
			continue
		}
		if g.Status != tt.status {
			t.Errorf("%s: got status %q, want %q", tt.name, g.Status, tt.status)
		}
		for _, h := range tt.has {
			if !bytes.Contains(g.Output, []byte(h)) {
				t.Errorf("%s: output lacks %q:\n%s", tt.name, h, g.Output)
			}
		}
		for _, h := range tt.hasNot {
			if bytes.Contains(g.Output, []byte(h)) {
				t.Errorf("%s: output has %q:\n%s", tt.name, h, g.Output)
			}
		}
	}
}

func TestRunPattern(t *testing.T) {
	tests := []struct {
		names []string
		want  string
	}{
		{[]string{"TestVMA"}, "^TestVMA$"},
		{[]string{"TestVMA/with_space+x"}, `^TestVMA$/^with_space\+x$`},
		{[]string{"TestVMA", "TestVMB"}, "^(TestVMA|TestVMB)$"},
	}
	for _, tt := range tests {
		if got := runPattern(tt.names); got != tt.want {
			t.Errorf("runPattern(%q): got %q, want %q", tt.names, got, tt.want)
		}
	}
}

func TestSelectTests(t *testing.T) {
	list := []byte("TestUnit\nTestVMA\nTestVMB\nTestVMRun\nExampleX\nok  \tpkg\t0.1s\n")
	tests := []struct {
		name, run, skip, current string
		want                     []string
		wantErr                  bool
	}{
		{"all VM tests", "^TestVM", "", "TestVMA", []string{"TestVMA", "TestVMB", "TestVMRun"}, false},
		{"run narrows", "TestVM[AB]", "", "TestVMB", []string{"TestVMA", "TestVMB"}, false},
		{"skip removes", "^TestVM", "Run", "TestVMA", []string{"TestVMA", "TestVMB"}, false},
		{"current not selected", "TestVMA", "", "TestVMB", nil, true},
		{"bad regexp", "(", "", "TestVMA", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := selectTests(list, tt.run, tt.skip, tt.current)
			if (err != nil) != tt.wantErr || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, %v; want %q (error: %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestMountsOf(t *testing.T) {
	mi := filepath.Join(t.TempDir(), "mountinfo")
	os.WriteFile(mi, []byte(`22 1 0:21 / /proc rw - proc proc rw
40 30 253:2 / /tmp/mnt rw,relatime - ext4 /dev/mapper/vg-lv rw
41 40 253:2 /sub /tmp/mnt/with\040space/deeper rw - ext4 /dev/mapper/vg-lv rw
42 30 7:0 / /tmp/loop rw - ext4 /dev/loop0 rw
`), 0o644)
	tests := []struct {
		devno string
		want  []string
	}{
		{"253:2", []string{"/tmp/mnt/with space/deeper", "/tmp/mnt"}},
		{"7:0", []string{"/tmp/loop"}},
		{"8:1", nil},
	}
	for _, tt := range tests {
		got, err := mountsOf(mi, tt.devno)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("mountsOf(%s): got %q, %v; want %q", tt.devno, got, err, tt.want)
		}
	}
}

func TestPruneKits(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-8 * 24 * time.Hour)
	for name, mtime := range map[string]time.Time{"current": old, "stale": old, "recent": time.Now(), "broken": {}} {
		os.MkdirAll(filepath.Join(dir, name), 0o755)
		if !mtime.IsZero() {
			m := filepath.Join(dir, name, "kit.json")
			os.WriteFile(m, []byte("{}"), 0o644)
			os.Chtimes(m, mtime, mtime)
		}
	}
	pruneKits(dir, "current", 7*24*time.Hour)
	tests := []struct {
		name string
		kept bool
	}{{"current", true}, {"recent", true}, {"stale", false}, {"broken", false}}
	for _, tt := range tests {
		_, err := os.Stat(filepath.Join(dir, tt.name))
		if kept := err == nil; kept != tt.kept {
			t.Errorf("%s: kept %v, want %v", tt.name, kept, tt.kept)
		}
	}
}

func TestAptListsStamp(t *testing.T) {
	dir := t.TempDir()
	if got := aptListsStamp(dir); got != "" {
		t.Errorf("empty lists: got stamp %q, want none", got)
	}
	// bookworm's apt stores lists lz4-compressed.
	list := filepath.Join(dir, "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4")
	os.WriteFile(list, []byte("a"), 0o644)
	os.WriteFile(filepath.Join(dir, "deb.debian.org_debian_dists_bookworm_InRelease"), []byte("x"), 0o644)
	first := aptListsStamp(dir)
	if first == "" {
		t.Fatal("got no stamp for a Packages list")
	}
	if again := aptListsStamp(dir); again != first {
		t.Errorf("unchanged lists: got %q, want %q", again, first)
	}
	os.WriteFile(list, []byte("ab"), 0o644) // apt-get update
	if changed := aptListsStamp(dir); changed == first {
		t.Errorf("changed list kept stamp %q", first)
	}
}
