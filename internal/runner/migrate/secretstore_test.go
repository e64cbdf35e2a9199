package migrate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/doors/secrets"
	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/hostview/blockstack/blockstacktest"
	"github.com/cryptshift/cryptshift/libvirt"
)

// plaintextSecretStore mounts a plaintext disk over /etc/libvirt in the
// fixture's host tree.
func plaintextSecretStore(t *testing.T, f *fixture) {
	t.Helper()
	tr := blockstacktest.New(f.opts.Root)
	tr.Mount("/etc/libvirt", "ext4", "/dev/sdc", "8:32", "rw")
	if err := tr.Finish(); err != nil {
		t.Fatal(err)
	}
}

// pool: targets keep their keys in libvirt secrets, which libvirtd stores
// under /etc/libvirt/secrets. On plaintext storage the migration is
// refused, in a dry run too, before anything is made; the same check as
// vg: targets' key directory.
func TestPoolRefusesPlaintextSecretStore(t *testing.T) {
	for _, dry := range []bool{true, false} {
		f := newFixture(t, libvirt.ShutOff, ModeOffline)
		plaintextSecretStore(t, f)
		f.opts.DryRun = dry
		_, err := Run(context.Background(), f.opts)
		want := "cannot migrate domain mail: the libvirt secret store /etc/libvirt/secrets is on plaintext storage (plaintext on sdc); " +
			"libvirtd would keep the disks' keys there in the clear; keep /etc on the encrypted root, use --to vg:NAME, or accept it with --allow-plaintext-secret-store"
		if err == nil || err.Error() != want || exitcode.Of(err) != exitcode.Invalid {
			t.Fatalf("dry run %v: got %v (exit %d)\nwant %s", dry, err, exitcode.Of(err), want)
		}
		if len(f.hv.secrets) != 0 {
			t.Errorf("secrets were defined: %v", f.hv.secrets)
		}
		if _, err := os.Stat(f.opts.JournalPath); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a journal was written: %v", err)
		}
	}
}

// When libvirt creates the targets (qemu's default iteration time), it
// writes each key for qemu-img create into /run/libvirt/storage for a few
// seconds: a plaintext /run is refused like a plaintext secret store, a
// tmpfs /run is fine, and with --iter-time qemu-img creates the targets
// (the key on a pipe), so /run does not matter.
func TestPoolLibvirtKeyFileStorage(t *testing.T) {
	for _, tc := range []struct {
		name     string
		fs, dev  string
		iterTime int
		refused  bool
	}{
		{name: "plaintext /run", fs: "ext4", dev: "/dev/sdc", refused: true},
		{name: "tmpfs /run", fs: "tmpfs", dev: "tmpfs"},
		{name: "plaintext /run, --iter-time", fs: "ext4", dev: "/dev/sdc", iterTime: 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, libvirt.ShutOff, ModeOffline)
			// encryptedHostRoot's tree, with /run mounted on its own.
			f.opts.Root = filepath.Join(t.TempDir(), "host")
			tr := blockstacktest.New(f.opts.Root)
			tr.Disk("sda", "8:0", 20<<30)
			tr.Crypt("dm-0", "253:0", "LUKS2", "root_crypt", 20<<30, "sda")
			tr.Mount("/", "ext4", "/dev/mapper/root_crypt", "253:0", "rw")
			tr.Disk("sdc", "8:32", 1<<30)
			majMin := "0:30"
			if tc.dev == "/dev/sdc" {
				majMin = "8:32"
			}
			tr.Mount("/run", tc.fs, tc.dev, majMin, "rw")
			if err := tr.Finish(); err != nil {
				t.Fatal(err)
			}
			f.opts.DryRun, f.opts.IterTimeMS = true, tc.iterTime
			_, err := Run(context.Background(), f.opts)
			if !tc.refused {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			want := "libvirt's storage state directory /run/libvirt/storage is on plaintext storage (plaintext on sdc): libvirtd writes each new volume's key there"
			if err == nil || !strings.Contains(err.Error(), want) || exitcode.Of(err) != exitcode.Invalid {
				t.Fatalf("got %v (exit %d), want %q", err, exitcode.Of(err), want)
			}
			f.opts.AllowPlaintextSecretStore = true
			if _, err := Run(context.Background(), f.opts); err != nil {
				t.Fatalf("with --allow-plaintext-secret-store: %v", err)
			}
		})
	}
}

// --allow-plaintext-secret-store is the explicit way past it.
func TestPoolPlaintextSecretStoreAllowed(t *testing.T) {
	f := newFixture(t, libvirt.ShutOff, ModeOffline)
	plaintextSecretStore(t, f)
	f.opts.AllowPlaintextSecretStore = true
	if _, err := Run(context.Background(), f.opts); err != nil {
		t.Fatal(err)
	}
	if len(f.hv.secrets) != 2 {
		t.Fatalf("got %d secrets, want one per disk", len(f.hv.secrets))
	}
}

// migrate reads --passphrase-file through apply's reader: the same mode
// check, size limit and trimming (all trailing CR/LF, as apply).
func TestPassphraseFileUsesTheCheckedReader(t *testing.T) {
	f := newFixture(t, libvirt.ShutOff, ModeOffline)
	pf := filepath.Join(f.dir, "pass")
	os.WriteFile(pf, []byte("correct horse battery staple\r\n\n"), 0o644)
	os.Chmod(pf, 0o644)
	f.opts.PassphraseFile = pf
	_, err := Run(context.Background(), f.opts)
	if err == nil || !strings.Contains(err.Error(), "its mode 0644 lets other users read it; chmod 600 it") || exitcode.Of(err) != exitcode.Usage {
		t.Fatalf("world-readable passphrase file: got %v", err)
	}
	os.Chmod(pf, 0o600)
	if _, err := Run(context.Background(), f.opts); err != nil {
		t.Fatal(err)
	}
	want, err := secrets.FromFile(pf)
	if err != nil {
		t.Fatal(err)
	}
	for uuid, v := range f.hv.secrets {
		if string(v) != string(want) || string(v) != "correct horse battery staple" {
			t.Errorf("secret %s holds %q; apply's reader gives %q", uuid, v, want)
		}
	}

	big := newFixture(t, libvirt.ShutOff, ModeOffline)
	bf := filepath.Join(big.dir, "big")
	os.WriteFile(bf, make([]byte, secrets.MaxLen+1), 0o600)
	big.opts.PassphraseFile = bf
	if _, err := Run(context.Background(), big.opts); err == nil || !strings.Contains(err.Error(), "longer than 8388608 bytes") {
		t.Fatalf("oversized passphrase file: got %v", err)
	}
}
