package verify

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// checkInputs names, for every check id, the files it rests on in the
// reference fixture; "essential" inputs make verify refuse the tree as a
// whole (no report), the others must turn the check into SKIP.
var checkInputs = map[string]struct {
	inputs    []string
	essential bool
}{
	"swap.device":             {[]string{"/proc/swaps"}, true},
	"swap.zram-writeback":     {[]string{"/sys/class/block"}, true},
	"swap.fstab":              {[]string{"/etc/fstab"}, false},
	"swap.crypttab":           {[]string{"/etc/crypttab"}, false},
	"hibernate.resume":        {[]string{"/sys/power/resume"}, false},
	"tmp.tmp":                 {[]string{"/proc/self/mountinfo"}, true},
	"tmp.var-tmp":             {[]string{"/proc/self/mountinfo"}, true},
	"tmp.dev-shm":             {[]string{"/proc/self/mountinfo"}, true},
	"logs.var-log":            {[]string{"/proc/self/mountinfo"}, true},
	"logs.journal":            {[]string{"/proc/self/mountinfo"}, true},
	"storage.mount":           {[]string{"/proc/self/mountinfo"}, true},
	"storage.leftover":        {[]string{"/sys/class/block"}, true},
	"coredump.pattern":        {[]string{"/proc/sys/kernel/core_pattern"}, false},
	"coredump.systemd":        {[]string{"/proc/sys/kernel/core_pattern", "/usr/lib/sysctl.d"}, false},
	"coredump.crash-dir":      {[]string{"/var/crash"}, false},
	"kdump.target":            {[]string{"/sys/kernel/kexec_crash_loaded"}, false},
	"libvirt.installed":       {[]string{"/etc/libvirt"}, false},
	"libvirt.leftover":        {[]string{"/var/lib/libvirt/images"}, false},
	"libvirt.disk.backing":    {[]string{"/var/lib/libvirt/images"}, false},
	"libvirt.dump":            {[]string{"/etc/libvirt/qemu.conf"}, false},
	"libvirt.dump-guest-core": {[]string{"/etc/libvirt/qemu.conf"}, false},
	"libvirt.secrets":         {[]string{"/etc/libvirt/secrets"}, false},
	"lvm.snapshot":            {[]string{"/sys/class/block"}, true},
	"lvm.leftover":            {[]string{"/sys/class/block"}, true},
	"lvm.metadata":            {[]string{"/etc/lvm"}, false},
	"mail.postfix.queue":      {[]string{"/etc/postfix/main.cf"}, false},
	"mail.postfix.spool":      {[]string{"/etc/postfix/main.cf"}, false},
	"mail.dovecot.location":   {[]string{"/etc/dovecot"}, false},
	"mail.dovecot.index":      {[]string{"/etc/dovecot"}, false},
	"mail.filters":            {[]string{"/etc/amavis"}, false},
	"keys.crypttab":           {[]string{"/etc/crypttab"}, false},
	"keys.initramfs":          {[]string{"/boot"}, false},
	"keys.header-backup":      {[]string{"/boot", "/root", "/etc", "/var/backups", "/home"}, false},
	"luks.header":             {[]string{"/cryptshift-capture/manifest.json:luks"}, false},
	"keys.unlock":             {[]string{"/cryptshift-capture/manifest.json:luks"}, false},
}

// libvirtIDs rest on /etc/libvirt: without it only libvirt.installed says SKIP.
var libvirtIDs = []string{"libvirt.disk.storage", "libvirt.disk.backing", "libvirt.managed-save", "libvirt.snapshot.memory",
	"libvirt.dump", "libvirt.dump-guest-core", "libvirt.memory-backing", "libvirt.secrets", "libvirt.pool", "libvirt.leftover"}

// TestNoPassWithoutInputs: for every check, removing its inputs from the
// reference capture yields SKIP for it, never PASS; removing an essential
// input refuses the tree; and the verdict is never PASS.
func TestNoPassWithoutInputs(t *testing.T) {
	src := filepath.Join(fixtureDir, "mailhost-luks-on-lvm", "root")
	ref, err := Run(Options{Root: src, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ref.Checks {
		if _, ok := checkInputs[c.ID]; !ok && !contains(libvirtIDs, c.ID) && Area(c.ID) != "luks" && c.ID != "mail.amavis" {
			t.Errorf("check %s has no entry in checkInputs: say which inputs it rests on", c.ID)
		}
	}
	for id, in := range checkInputs {
		t.Run(id, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "root")
			if out, err := exec.Command("cp", "-a", src, root).CombinedOutput(); err != nil {
				t.Fatalf("%v %s", err, out)
			}
			for _, p := range in.inputs {
				if p == "/cryptshift-capture/manifest.json:luks" {
					dropLUKS(t, root)
					continue
				}
				if err := os.RemoveAll(filepath.Join(root, filepath.FromSlash(p))); err != nil {
					t.Fatal(err)
				}
			}
			r, err := Run(Options{Root: root, Version: "test"})
			if in.essential {
				if !errors.Is(err, ErrNotHostTree) {
					t.Fatalf("without %v: got %v, want the tree refused", in.inputs, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, c := range r.Checks {
				if c.ID != id {
					continue
				}
				n++
				if c.Status != Skip {
					t.Errorf("without %v: %s %s is %s %q, want SKIP", in.inputs, c.ID, c.Subject, c.Status, c.Evidence)
				}
			}
			if n == 0 {
				t.Errorf("without %v: no result for %s at all; want SKIP saying why", in.inputs, id)
			}
			if r.Summary.Verdict == Pass {
				t.Errorf("without %v: verdict PASS", in.inputs)
			}
		})
	}
}

// dropLUKS removes the LUKS metadata from a captured tree's manifest.
func dropLUKS(t *testing.T, root string) {
	t.Helper()
	p := filepath.Join(root, "cryptshift-capture", "manifest.json")
	f := newFx(root, "", "")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := jsonUnmarshal(b, &f.m); err != nil {
		t.Fatal(err)
	}
	f.m.LUKS = nil
	out, err := jsonMarshal(f.m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestEmptyAndNonTreeDirectoriesAreRefused: no report, so no PASS.
func TestEmptyAndNonTreeDirectoriesAreRefused(t *testing.T) {
	for _, dir := range []string{t.TempDir(), filepath.Join(fixtureDir, "mailhost-luks-on-lvm"), "../../../docs"} {
		if r, err := Run(Options{Root: dir, Version: "test"}); !errors.Is(err, ErrNotHostTree) || r != nil {
			t.Errorf("%s: got report %v, error %v; want ErrNotHostTree and no report", dir, r != nil, err)
		}
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func jsonMarshal(v any) ([]byte, error) { return json.MarshalIndent(v, "", "  ") }
