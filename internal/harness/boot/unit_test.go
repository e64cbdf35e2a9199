package boot

import (
	"context"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestQemuArgsUEFI(t *testing.T) {
	m := Machine{Name: "n", Dir: "/d", UEFI: true, SSHPort: 2222,
		Disks:    []Disk{{Path: "/d/a.qcow2", Format: "qcow2", Serial: "newdisk0"}, {Path: "/d/b.img", Serial: "newdisk1"}},
		GuestFwd: map[int]string{8080: "socat - TCP:127.0.0.1:8080,retry=0"},
		TPM:      &SWTPM{Socket: "/d/tpm.sock"}}
	got := strings.Join(m.qemuArgs(), " ")
	for _, want := range []string{
		"-accel tcg",
		"-drive if=pflash,format=raw,unit=0,readonly=on,file=" + OVMFCode,
		"-drive if=pflash,format=raw,unit=1,file=/d/n.OVMF_VARS.fd",
		"-drive file=/d/a.qcow2,format=qcow2,if=none,id=disk0,cache=unsafe,discard=unmap -device virtio-blk-pci,drive=disk0,serial=newdisk0,bootindex=1",
		"-drive file=/d/b.img,format=raw,if=none,id=disk1",
		"-netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22,guestfwd=tcp:10.0.2.100:8080-cmd:socat - TCP:127.0.0.1:8080,,retry=0 ",
		"-chardev socket,id=chrtpm,path=/d/tpm.sock -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-tis,tpmdev=tpm0",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("qemu arguments lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "-kernel") {
		t.Errorf("a UEFI boot must not take the -kernel shortcut:\n%s", got)
	}
}

func TestQemuArgsDirectKernel(t *testing.T) {
	m := Machine{Name: "old", Dir: "/d", Kernel: "/k", Initrd: "/i", Append: "root=UUID=x ro", SSHPort: 1}
	got := strings.Join(m.qemuArgs(), " ")
	if !strings.Contains(got, "-kernel /k -append root=UUID=x ro -initrd /i") {
		t.Errorf("got %s", got)
	}
	if strings.Contains(got, "pflash") || strings.Contains(got, "tpm") {
		t.Errorf("unexpected firmware or TPM: %s", got)
	}
}

func TestConsoleExpect(t *testing.T) {
	r, w := io.Pipe()
	in := &strings.Builder{}
	c, err := newConsole(r, in, t.TempDir()+"/console.log")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		io.WriteString(w, "Loading Linux 6.1...\nBegin: Running /scripts/local-top ... Please unl")
		time.Sleep(20 * time.Millisecond)
		io.WriteString(w, "ock disk root_crypt: ")
	}()
	ctx := context.Background()
	m, err := c.Expect(ctx, UnlockPrompt, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m[1] != "root_crypt" {
		t.Errorf("got mapping %q, want root_crypt", m[1])
	}
	// The search continues after the match: the same prompt is not seen twice.
	if _, err := c.Expect(ctx, UnlockPrompt, 50*time.Millisecond); err == nil {
		t.Error("Expect matched the same prompt twice")
	}
	if err := c.SendSecret([]byte("s3cret")); err != nil {
		t.Fatal(err)
	}
	if c.Typed() != 1 {
		t.Errorf("Typed() = %d after one line", c.Typed())
	}
	if in.String() != "s3cret\r" {
		t.Errorf("typed %q, want the secret and a carriage return", in.String())
	}
	w.Close()
	if _, err := c.Expect(ctx, regexp.MustCompile("never"), 5*time.Second); err == nil || !strings.Contains(err.Error(), "the guest stopped") {
		t.Errorf("Expect after the console closed: got %v, want an error saying the guest stopped", err)
	}
	if strings.Contains(c.Output(), "s3cret") {
		t.Error("the secret reached the console record")
	}
}

func TestConsoleExpectAny(t *testing.T) {
	r, w := io.Pipe()
	c, err := newConsole(r, io.Discard, t.TempDir()+"/console.log")
	if err != nil {
		t.Fatal(err)
	}
	go io.WriteString(w, "cryptsetup: root_crypt: set up successfully\nUnlocked /dev/mapper/vg0-root with clevis\n")
	i, m, err := c.ExpectAny(context.Background(), 5*time.Second, UnlockPrompt, ClevisUnlocked)
	if err != nil {
		t.Fatal(err)
	}
	if i != 1 || m[1] != "/dev/mapper/vg0-root" {
		t.Errorf("got alternative %d %q, want 1 and the device", i, m)
	}
}

func TestTestKDF(t *testing.T) {
	in := []byte("name: x\nluks:\n  cipher: aes-xts-plain64\n")
	got := string(testKDF(in))
	if !strings.Contains(got, "luks:\n  iterations: 4\n  memoryKiB: 65536\n  cipher: aes-xts-plain64\n") {
		t.Errorf("got %q", got)
	}
}

func TestRecipeKeyChangesWithTheRecipe(t *testing.T) {
	k := recipeKey()
	saved := OldHostPackages
	OldHostPackages = append(append([]string{}, saved...), "vim")
	defer func() { OldHostPackages = saved }()
	if recipeKey() == k {
		t.Error("adding a package did not change the image key")
	}
}
