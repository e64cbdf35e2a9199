package migrate

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/runner/engine"
	"github.com/cryptshift/cryptshift/libvirt"
)

type crash struct{ point string }

// runUntil runs a migration that "crashes" at point: the failpoint panics
// out of Run like a kill -9 stops the process (the journal is what it is).
func runUntil(t *testing.T, f *fixture, point string) (fired bool) {
	t.Helper()
	restore := engine.SetFault(func(p string) {
		if p == point {
			panic(crash{p})
		}
	})
	defer func() {
		restore()
		if r := recover(); r != nil {
			if _, ok := r.(crash); !ok {
				panic(r)
			}
			fired = true
		}
	}()
	if _, err := Run(context.Background(), f.opts); err != nil {
		t.Fatalf("before the crash at %s: %v\n%s", point, err, f.out)
	}
	return false
}

func (f *fixture) chainsOf(inactive bool) string {
	dom, _ := f.hv.DomainXML("mail", libvirt.XMLFlags{Inactive: inactive})
	return f.scrub(chains(dom))
}

func (f *fixture) poolFiles() []string {
	ents, _ := os.ReadDir(filepath.Join(f.dir, "pool"))
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// TestCrashResumeAndRollback is the crash matrix against the fake: for each
// crash point, resume must finish the migration and rollback must restore
// the original disks, whatever state the crash left.
func TestCrashResumeAndRollback(t *testing.T) {
	points := map[string][]string{
		ModeOffline: {"state:vda:planned", "begin:vda.key", "state:vda:target-created", "begin:vdb.target", "state:vda:copied",
			"state:vda:verified", "state:vdb:verified", "begin:domain.switch", "state:vda:switched"},
		ModeLive: {"state:vda:target-created", "begin:vda.overlay", "begin:domain.snapshot", "state:vda:snapshot",
			"state:vda:copied", "state:vdb:verified", "begin:vda.switch", "job:vda:copy",
			"state:vda:switched", "job:vdb:copy", "state:vdb:switched"},
		"mirror": {"state:vda:target-created", "state:vda:copied", "begin:domain.verify-switch", "state:vda:verified",
			"state:vdb:verified", "state:vda:switched"},
	}
	migrated := "vda=$DIR/pool/mail-vda.luks+luks vdb=$DIR/pool/mail-vdb.qcow2+luks sda=$DIR/src/debian.iso"
	original := "vda=$DIR/src/mail-a.raw vdb=$DIR/src/mail-b.qcow2 sda=$DIR/src/debian.iso"
	originalLive := "vda=$DIR/src/mail-a.raw vdb=$DIR/src/mail-b.qcow2<$DIR/src/mail-base.raw sda=$DIR/src/debian.iso"
	for _, variant := range []string{ModeOffline, ModeLive, "mirror"} {
		mode := variant
		if variant == "mirror" {
			mode = ModeLive
		}
		for _, point := range points[variant] {
			for _, then := range []string{"resume", "rollback"} {
				t.Run(variant+"/"+point+"/"+then, func(t *testing.T) {
					state := libvirt.ShutOff
					if mode == ModeLive {
						state = libvirt.Running
					}
					f := newFixture(t, state, mode)
					if variant == "mirror" {
						f.opts.Engine = EngineMirror
					}
					if !runUntil(t, f, point) {
						t.Fatalf("failpoint %s never fired", point)
					}
					switch then {
					case "resume":
						o := f.opts
						o.Resume = true
						res, err := Run(context.Background(), o)
						if err != nil {
							t.Fatalf("resume: %v\n%s", err, f.out)
						}
						if res.States["vda"] != StateSwitched || res.States["vdb"] != StateSwitched {
							t.Fatalf("states after resume: %v", res.States)
						}
						if got := f.chainsOf(true); got != migrated {
							t.Fatalf("persistent definition after resume: %s", got)
						}
						if mode == ModeLive {
							if got := f.chainsOf(false); got != migrated {
								t.Fatalf("running guest after resume: %s", got)
							}
						}
						if got := strings.Join(f.poolFiles(), " "); got != "mail-vda.luks mail-vdb.qcow2" {
							t.Fatalf("pool after resume: %s", got)
						}
					case "rollback":
						if err := Rollback(context.Background(), f.opts.JournalPath, RollbackOptions{Hypervisor: f.hv, Images: f.img, Out: f.out}); err != nil {
							t.Fatalf("rollback: %v\n%s", err, f.out)
						}
						if got := f.chainsOf(true); got != original {
							t.Fatalf("persistent definition after rollback: %s", got)
						}
						if mode == ModeLive {
							if got := f.chainsOf(false); got != originalLive {
								t.Fatalf("running guest after rollback: %s", got)
							}
						}
						if len(f.poolFiles()) != 0 || len(f.hv.secrets) != 0 {
							t.Fatalf("left after rollback: files %v, secrets %d", f.poolFiles(), len(f.hv.secrets))
						}
						// A rolled-back journal cannot be resumed.
						o := f.opts
						o.Resume = true
						if _, err := Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), "rolled back") {
							t.Fatalf("resume after rollback: got %v", err)
						}
					}
					if mode == ModeLive && f.hv.doms["mail"].state != libvirt.Running {
						t.Fatal("the live guest stopped")
					}
					f.checkNoSecret(t)
				})
			}
		}
	}
}
