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
