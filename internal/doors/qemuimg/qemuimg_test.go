package qemuimg

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/harness/testtier"
)

var key = []byte("s3cret-passphrase-value")

func TestCommandLines(t *testing.T) {
	tests := []struct {
		name  string
		cmd   execx.Cmd
		want  string
		files int
	}{
		{
			name: "create luks target",
			cmd:  CreateCmd(CreateOptions{Path: "/pool/d-vda.luks", Format: LUKS, Size: 1 << 20, Secret: key, IterTimeMS: 50}),
			want: "qemu-img create -q --object secret,id=sec0,file=/proc/self/fd/3 -f luks -o key-secret=sec0,iter-time=50 /pool/d-vda.luks 1048576", files: 1,
		},
		{
			name: "create encrypted qcow2 overlay",
			cmd:  CreateCmd(CreateOptions{Path: "/pool/o.qcow2", Format: QCOW2, Size: 4096, Secret: key, BackingPath: "/src/a.raw", BackingFormat: Raw}),
			want: "qemu-img create -q --object secret,id=sec0,file=/proc/self/fd/3 -f qcow2 -o encrypt.format=luks,encrypt.key-secret=sec0 -b /src/a.raw -F raw -u /pool/o.qcow2 4096", files: 1,
		},
		{
			name: "create plaintext raw",
			cmd:  CreateCmd(CreateOptions{Path: "/x.raw", Format: Raw, Size: 512}),
			want: "qemu-img create -q -f raw /x.raw 512",
		},
		{
			name: "convert chain into luks",
			cmd:  ConvertCmd(Image{Path: "/src/b.qcow2", Format: QCOW2}, Image{Path: "/pool/t.luks", Format: LUKS, Secret: key}),
			want: "qemu-img convert -q --object secret,id=sec0,file=/proc/self/fd/3 -n --image-opts --target-image-opts driver=qcow2,file.filename=/src/b.qcow2 driver=luks,key-secret=sec0,file.filename=/pool/t.luks", files: 1,
		},
		{
			name: "convert chain sparsely into encrypted qcow2",
			cmd:  ConvertSparseCmd(Image{Path: "/src/b.qcow2", Format: QCOW2}, Image{Path: "/pool/t.qcow2", Format: QCOW2, Secret: key}),
			want: "qemu-img convert -q --object secret,id=sec0,file=/proc/self/fd/3 -n --target-is-zero --image-opts --target-image-opts driver=qcow2,file.filename=/src/b.qcow2 driver=qcow2,encrypt.format=luks,encrypt.key-secret=sec0,file.filename=/pool/t.qcow2", files: 1,
		},
		{
			name: "sparse convert and compare of a target opened with O_DIRECT",
			cmd:  ConvertSparseCmd(Image{Path: "/src/b.qcow2", Format: QCOW2}, Image{Path: "/pool/t.qcow2", Format: QCOW2, Secret: key, Direct: true}),
			want: "qemu-img convert -q --object secret,id=sec0,file=/proc/self/fd/3 -n --target-is-zero --image-opts --target-image-opts driver=qcow2,file.filename=/src/b.qcow2 driver=qcow2,encrypt.format=luks,encrypt.key-secret=sec0,file.filename=/pool/t.qcow2,cache.direct=on", files: 1,
		},
		{
			name: "compare reads only the target with O_DIRECT",
			cmd:  CompareCmd(Image{Path: "/src/b.qcow2", Format: QCOW2}, Image{Path: "/pool/t.luks", Format: LUKS, Secret: key, Direct: true}, false),
			want: "qemu-img compare --object secret,id=sec0,file=/proc/self/fd/3 --image-opts driver=qcow2,file.filename=/src/b.qcow2 driver=luks,key-secret=sec0,file.filename=/pool/t.luks,cache.direct=on", files: 1,
		},
		{
			name: "compare shares one secret object for one key",
			cmd: CompareCmd(
				Image{Path: "/pool/o2.qcow2", Format: QCOW2, Secret: key, Backing: &Image{Path: "/pool/t.luks", Format: LUKS, Secret: key}},
				Image{Path: "/src/a,b.raw", Format: Raw}, true),
			want: "qemu-img compare --object secret,id=sec0,file=/proc/self/fd/3 -U --image-opts driver=qcow2,encrypt.format=luks,encrypt.key-secret=sec0,file.filename=/pool/o2.qcow2,file.locking=off,backing.driver=luks,backing.key-secret=sec0,backing.file.filename=/pool/t.luks,backing.file.locking=off driver=raw,file.filename=/src/a,,b.raw,file.locking=off", files: 1,
		},
		{
			name: "compare two keys",
			cmd:  CompareCmd(Image{Path: "/a", Format: LUKS, Secret: []byte("one-key")}, Image{Path: "/b", Format: LUKS, Secret: []byte("two-key")}, false),
			want: "qemu-img compare --object secret,id=sec0,file=/proc/self/fd/3 --object secret,id=sec1,file=/proc/self/fd/4 --image-opts driver=luks,key-secret=sec0,file.filename=/a driver=luks,key-secret=sec1,file.filename=/b", files: 2,
		},
		{
			name: "commit keeps the overlay",
			cmd:  CommitCmd(Image{Path: "/pool/o.qcow2", Format: QCOW2, Secret: key}),
			want: "qemu-img commit -q --object secret,id=sec0,file=/proc/self/fd/3 -d --image-opts driver=qcow2,encrypt.format=luks,encrypt.key-secret=sec0,file.filename=/pool/o.qcow2", files: 1,
		},
		{
			name: "rebase unsafe",
			cmd:  RebaseUnsafeCmd(Image{Path: "/pool/o2.qcow2", Format: QCOW2, Secret: key}, "/src/a.raw", Raw),
			want: "qemu-img rebase -q --object secret,id=sec0,file=/proc/self/fd/3 -u -b /src/a.raw -F raw --image-opts driver=qcow2,encrypt.format=luks,encrypt.key-secret=sec0,file.filename=/pool/o2.qcow2", files: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.cmd.String(); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
			if got := len(tt.cmd.ExtraFiles); got != tt.files {
				t.Errorf("got %d secret descriptors, want %d", got, tt.files)
			}
			if strings.Contains(tt.cmd.String(), string(key)) {
				t.Errorf("secret in argv: %q", tt.cmd.String())
			}
		})
	}
}

func TestCompareResults(t *testing.T) {
	a, b := Image{Path: "/a", Format: Raw}, Image{Path: "/b", Format: Raw}
	rec := &execx.Recorder{Responses: map[string]execx.Result{}}
	d := &Driver{Runner: rec}
	if err := d.Compare(context.Background(), a, b, false); err != nil {
		t.Fatalf("identical images: got %v, want nil", err)
	}
	d.Runner = runnerFunc(func(ctx context.Context, c execx.Cmd) (execx.Result, error) {
		return execx.Result{Stdout: []byte("Content mismatch at offset 0!\n"), ExitCode: 1},
			&execx.Error{Cmd: c.String(), ExitCode: 1, Err: errors.New("exit status 1")}
	})
	err := d.Compare(context.Background(), a, b, false)
	if !errors.Is(err, ErrDiffer) || !strings.Contains(err.Error(), "offset 0") {
		t.Fatalf("different images: got %v, want ErrDiffer naming the offset", err)
	}
	d.Runner = runnerFunc(func(ctx context.Context, c execx.Cmd) (execx.Result, error) {
		return execx.Result{ExitCode: 2}, &execx.Error{Cmd: c.String(), ExitCode: 2, Stderr: "Could not open", Err: errors.New("exit status 2")}
	})
	if err := d.Compare(context.Background(), a, b, false); err == nil || errors.Is(err, ErrDiffer) {
		t.Fatalf("unreadable image: got %v, want an error that is not ErrDiffer", err)
	}
}

type runnerFunc func(context.Context, execx.Cmd) (execx.Result, error)

func (f runnerFunc) Run(ctx context.Context, c execx.Cmd) (execx.Result, error) { return f(ctx, c) }

func TestParseInfoChain(t *testing.T) {
	out := `[{"backing-filename-format":"raw","virtual-size":33554432,"filename":"b.qcow2","cluster-size":65536,
"format":"qcow2","actual-size":331776,"full-backing-filename":"/src/base.raw","backing-filename":"base.raw","dirty-flag":false},
{"virtual-size":33554432,"filename":"/src/base.raw","format":"raw","actual-size":69632,"dirty-flag":false}]`
	chain, err := ParseInfoChain([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 || chain[0].FullBackingFilename != "/src/base.raw" || chain[0].BackingFormat != "raw" || chain[1].Format != "raw" || chain[0].VirtualSize != 33554432 {
		t.Fatalf("got %+v", chain)
	}
	one, err := ParseInfoChain([]byte(`{"filename":"a","format":"luks","virtual-size":1,"encrypted":true}`))
	if err != nil || len(one) != 1 || !one[0].Encrypted {
		t.Fatalf("got %+v, %v", one, err)
	}
	for _, bad := range []string{"", "[]", "{", "not json"} {
		if _, err := ParseInfoChain([]byte(bad)); err == nil {
			t.Errorf("ParseInfoChain(%q): got nil error", bad)
		}
	}
}

// TestHostQemuImgRoundTrip runs the real qemu-img: a qcow2 chain copied into
// an encrypted luks image compares identical, the key never leaves the pipe,
// and a changed byte is caught.
func TestHostQemuImgRoundTrip(t *testing.T) {
	testtier.Host(t, "qemu-img")
	ctx := context.Background()
	dir := t.TempDir()
	d := New()
	base := filepath.Join(dir, "base.raw")
	top := filepath.Join(dir, "top.qcow2")
	target := filepath.Join(dir, "t.luks")
	size := int64(4 << 20)
	if err := d.Create(ctx, CreateOptions{Path: base, Format: Raw, Size: size}); err != nil {
		t.Fatal(err)
	}
	writeAt(t, base, 1<<20, "base data")
	if err := d.Create(ctx, CreateOptions{Path: top, Format: QCOW2, Size: size, BackingPath: base, BackingFormat: Raw}); err != nil {
		t.Fatal(err)
	}
	if err := d.Create(ctx, CreateOptions{Path: target, Format: LUKS, Size: size, Secret: key, IterTimeMS: 10}); err != nil {
		t.Fatal(err)
	}
	chain, err := d.InfoChain(ctx, top, QCOW2)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 || chain[1].Filename != base {
		t.Fatalf("backing chain: got %+v, want top then %s", chain, base)
	}
	src := Image{Path: top, Format: QCOW2}
	dst := Image{Path: target, Format: LUKS, Secret: key}
	// A fresh luks image decrypts unwritten areas to noise: it must differ.
	if err := d.Compare(ctx, src, dst, false); !errors.Is(err, ErrDiffer) {
		t.Fatalf("fresh luks image: got %v, want ErrDiffer", err)
	}
	if err := d.Convert(ctx, src, dst); err != nil {
		t.Fatal(err)
	}
	if err := d.Compare(ctx, src, dst, false); err != nil {
		t.Fatalf("after convert: %v", err)
	}
	raw, err := os.ReadFile(target)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "base data") {
		t.Fatal("plaintext found in the encrypted image")
	}
	writeAt(t, base, 2<<20, "changed")
	if err := d.Compare(ctx, src, dst, false); !errors.Is(err, ErrDiffer) {
		t.Fatalf("after changing the source: got %v, want ErrDiffer", err)
	}
	wrong := Image{Path: target, Format: LUKS, Secret: []byte("wrong key")}
	if err := d.Compare(ctx, src, wrong, false); err == nil || errors.Is(err, ErrDiffer) {
		t.Fatalf("wrong key: got %v, want an open error", err)
	}
}

func writeAt(t *testing.T, path string, off int64, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte(s), off); err != nil {
		t.Fatal(err)
	}
}

func TestCreateRetriesFlakyPBKDFBenchmark(t *testing.T) {
	calls := 0
	d := &Driver{Runner: runnerFunc(func(ctx context.Context, c execx.Cmd) (execx.Result, error) {
		calls++
		if calls < 3 {
			return execx.Result{ExitCode: 1}, &execx.Error{Cmd: c.String(), ExitCode: 1,
				Stderr: "qemu-img: /x.luks: Unable to get accurate CPU usage", Err: errors.New("exit status 1")}
		}
		return execx.Result{}, nil
	})}
	if err := d.Create(context.Background(), CreateOptions{Path: "/x.luks", Format: LUKS, Size: 1, Secret: key}); err != nil || calls != 3 {
		t.Fatalf("got %v after %d calls, want success after 3", err, calls)
	}
	calls = 0
	d.Runner = runnerFunc(func(ctx context.Context, c execx.Cmd) (execx.Result, error) {
		calls++
		return execx.Result{ExitCode: 1}, &execx.Error{Cmd: c.String(), ExitCode: 1, Stderr: "No space left on device", Err: errors.New("exit status 1")}
	})
	if err := d.Create(context.Background(), CreateOptions{Path: "/x.luks", Format: LUKS, Size: 1, Secret: key}); err == nil || calls != 1 {
		t.Fatalf("other errors: got %v after %d calls, want a failure after 1", err, calls)
	}
}

// TestHostConvertSparseKeepsHoles copies a sparse qcow2 chain into an
// encrypted qcow2: the copy compares identical, only the data is allocated
// (the zeros written into the top layer and the holes stay holes), no
// plaintext is in the file, and a luks target is refused.
func TestHostConvertSparseKeepsHoles(t *testing.T) {
	testtier.Host(t, "qemu-img", "qemu-io")
	ctx := context.Background()
	dir := t.TempDir()
	d := New()
	base := filepath.Join(dir, "base.raw")
	top := filepath.Join(dir, "top.qcow2")
	target := filepath.Join(dir, "t.qcow2")
	size := int64(256 << 20)
	if err := d.Create(ctx, CreateOptions{Path: base, Format: Raw, Size: size}); err != nil {
		t.Fatal(err)
	}
	data := strings.Repeat("secret mail ", 1<<20/12)
	writeAt(t, base, 8<<20, data)
	if err := d.Create(ctx, CreateOptions{Path: top, Format: QCOW2, Size: size, BackingPath: base, BackingFormat: Raw}); err != nil {
		t.Fatal(err)
	}
	// 4 MiB of written zeros and 1 MiB of data in the top layer.
	for _, c := range []string{"write -z 32M 4M", "write -P 0x5a 64M 1M"} {
		if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", c, top).CombinedOutput(); err != nil {
			t.Fatalf("qemu-io %s: %v\n%s", c, err, out)
		}
	}
	if err := d.Create(ctx, CreateOptions{Path: target, Format: QCOW2, Size: size, Secret: key, IterTimeMS: 10}); err != nil {
		t.Fatal(err)
	}
	src := Image{Path: top, Format: QCOW2}
	dst := Image{Path: target, Format: QCOW2, Secret: key}
	before := allocatedBytes(t, target)
	if err := d.ConvertSparse(ctx, src, dst); err != nil {
		t.Fatal(err)
	}
	if err := d.Compare(ctx, src, dst, false); err != nil {
		t.Fatalf("after the sparse copy: %v", err)
	}
	// 2 MiB of data (1 MiB in the base, 1 MiB in the top), 64 KiB clusters.
	grown := allocatedBytes(t, target) - before
	if grown < 2<<20 || grown > 2<<20+512<<10 {
		t.Fatalf("the copy allocated %d bytes for 2 MiB of data", grown)
	}
	raw, err := os.ReadFile(target)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "secret mail") {
		t.Fatal("plaintext found in the encrypted image")
	}
	if err := d.ConvertSparse(ctx, src, Image{Path: target, Format: LUKS, Secret: key}); err == nil {
		t.Fatal("a sparse copy into a luks image was not refused")
	}
}

func allocatedBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}
