package apply

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/runner/engine"
	"github.com/cryptshift/cryptshift/lvm"
)

// faultCrash stops a run at an engine fault point the way kill -9 would:
// what the journal holds stays.
type faultCrash struct{ point string }

func crashApplyAt(t *testing.T, point string, fn func() error) {
	t.Helper()
	restore := engine.SetFault(func(p string) {
		if p == point {
			panic(faultCrash{p})
		}
	})
	defer restore()
	defer func() {
		if r := recover(); r != (faultCrash{point}) {
			t.Fatalf("fault point %s: got %v", point, r)
		}
	}()
	err := fn()
	t.Fatalf("the run passed fault point %s (err %v)", point, err)
}

// doneRecords maps each step to the "checked" flag of its done records
// (true: resume found it done by its postcondition and skipped it).
func doneRecords(t *testing.T, jp string) map[string][]bool {
	t.Helper()
	out := map[string][]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(mustRead(t, jp))), "\n") {
		var r struct {
			Type string
			Data struct {
				Step    string
				Checked bool
			}
		}
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		if r.Type == "done" {
			out[r.Data.Step] = append(out[r.Data.Step], r.Data.Checked)
		}
	}
	return out
}

// Resume decisions on typed steps, which only the VM tier exercised: a
// crash before a step ran (begin:ID), after it ran but before its done
// record (begin:ID with its effect in place), or after it (after:ID); the
// resume runs the step again, skips it as done by its postcondition
// (Done), or leaves it as completed, and never runs an lvcreate twice or
// changes a key file a keyslot may already use.
func TestResumeDecisionsOnTypedSteps(t *testing.T) {
	allowKeyDirs(t)
	const (
		kf = "keyfile:k"
		md = "mkdir:d"
		wb = "writeFstab:f"
		lc = "lvcreate:/dev/vg0/a"
	)
	type effect func(dir string, f *fakeLVM)
	for _, c := range []struct {
		point   string
		effect  effect // what the step did before the crash, beyond the journal
		checked []bool // the crashed step's done records after the resume
		lvs     int    // lvcreate commands over both runs
	}{
		{point: "begin:" + kf, checked: []bool{false}, lvs: 1},
		{point: "begin:" + kf, effect: func(dir string, _ *fakeLVM) {
			os.MkdirAll(filepath.Join(dir, "keys"), 0o700)
			os.WriteFile(filepath.Join(dir, "keys", "k.key"), bytes.Repeat([]byte{7}, 64), 0o400)
		}, checked: []bool{false}, lvs: 1}, // KeyFile has no Done: it runs again, and keeps the key
		{point: "after:" + kf, checked: []bool{false}, lvs: 1},
		{point: "begin:" + md, checked: []bool{false}, lvs: 1},
		{point: "begin:" + md, effect: func(dir string, _ *fakeLVM) { os.Mkdir(filepath.Join(dir, "d"), 0o700) }, checked: []bool{true}, lvs: 1},
		{point: "after:" + md, checked: []bool{false}, lvs: 1},
		{point: "begin:" + wb, checked: []bool{false}, lvs: 1},
		{point: "begin:" + wb, effect: func(dir string, _ *fakeLVM) {
			os.WriteFile(filepath.Join(dir, "fstab"), []byte("# BEGIN cryptshift layout t\nUUID=1 / ext4 defaults 0 1\n# END cryptshift layout t\n"), 0o644)
		}, checked: []bool{false}, lvs: 1}, // no Done: the block is written again, once
		{point: "begin:" + lc, checked: []bool{false}, lvs: 1},
		{point: "begin:" + lc, effect: func(_ string, f *fakeLVM) { f.exists = true; f.activate() }, checked: []bool{true}, lvs: 0},
		{point: "after:" + lc, checked: []bool{false}, lvs: 1},
	} {
		name := c.point
		if c.effect != nil {
			name += "+effect"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := &plan.Plan{APIVersion: plan.APIVersion, Kind: plan.Kind, Layout: "t", Root: dir, Steps: []plan.Step{
				plan.NewStep(plan.Step{ID: kf, Action: plan.ActKeyFile, Target: "k"},
					&plan.Params{KeyFile: &plan.KeyFile{Path: filepath.Join(dir, "keys", "k.key"), Bytes: 64}}, &plan.Params{Remove: &plan.Remove{Path: filepath.Join(dir, "keys", "k.key")}}),
				plan.NewStep(plan.Step{ID: md, Action: plan.ActMkdir, Target: "d"},
					&plan.Params{Mkdir: &plan.Mkdir{Path: filepath.Join(dir, "d"), Mode: 0o700}}, nil),
				plan.NewStep(plan.Step{ID: wb, Action: plan.ActWriteFstab, Target: "f",
					Input: "# BEGIN cryptshift layout t\nUUID=1 / ext4 defaults 0 1\n# END cryptshift layout t\n"},
					&plan.Params{WriteBlock: &plan.Block{File: filepath.Join(dir, "fstab"), Kind: "fstab", Layout: "t"}}, nil),
				plan.NewStep(plan.Step{ID: lc, Action: plan.ActLVCreate, Target: filepath.Join(dir, "vg0-a")},
					&plan.Params{LVCreate: &lvm.LVCreate{VG: "vg0", Name: "a", Extents: 10}}, &plan.Params{LVRemove: &lvm.LVRemove{VG: "vg0", Name: "a"}}),
			}}
			f := &fakeLVM{vg: "vg0", name: "a", node: filepath.Join(dir, "vg0-a")}
			jp := filepath.Join(dir, "j")
			opt := Options{JournalPath: jp, Run: f}
			crashApplyAt(t, c.point, func() error { return Run(context.Background(), p, opt) })
			if c.effect != nil {
				c.effect(dir, f)
			}
			var key []byte
			if b, err := os.ReadFile(filepath.Join(dir, "keys", "k.key")); err == nil {
				key = b
			}
			if err := Resume(context.Background(), opt); err != nil {
				t.Fatalf("resume: %v", err)
			}
			step := strings.SplitN(c.point, ":", 2)[1]
			if got := doneRecords(t, jp)[step]; len(got) != len(c.checked) || (len(got) > 0 && got[0] != c.checked[0]) {
				t.Errorf("done records of %s: got checked=%v, want %v", step, got, c.checked)
			}
			n := 0
			for _, l := range f.Lines() {
				if strings.HasPrefix(l, "lvm lvcreate ") {
					n++
				}
			}
			if n != c.lvs {
				t.Errorf("lvcreate ran %d times over both runs, want %d", n, c.lvs)
			}
			if got := mustRead(t, filepath.Join(dir, "keys", "k.key")); key != nil && !bytes.Equal(got, key) {
				t.Error("the resume changed a key file that existed before it")
			}
			if got := string(mustRead(t, filepath.Join(dir, "fstab"))); strings.Count(got, "# BEGIN cryptshift layout t") != 1 {
				t.Errorf("fstab after the resume:\n%s", got)
			}
			if st, err := os.Stat(filepath.Join(dir, "d")); err != nil || !st.IsDir() {
				t.Errorf("mkdir's directory: %v", err)
			}
		})
	}
}

// Undo decisions: a rollback skips an undo whose effect is already gone
// (an LV that no longer exists is not removed again; an absent key file
// is no error), so an interrupted rollback can simply run again.
func TestRollbackSkipsUndoneEffects(t *testing.T) {
	allowKeyDirs(t)
	dir := t.TempDir()
	kfPath := filepath.Join(dir, "keys", "k.key")
	p := &plan.Plan{APIVersion: plan.APIVersion, Kind: plan.Kind, Layout: "t", Root: dir, Steps: []plan.Step{
		plan.NewStep(plan.Step{ID: "keyfile:k", Action: plan.ActKeyFile, Target: "k"},
			&plan.Params{KeyFile: &plan.KeyFile{Path: kfPath, Bytes: 64}}, &plan.Params{Remove: &plan.Remove{Path: kfPath}}),
		plan.NewStep(plan.Step{ID: "lvcreate:/dev/vg0/a", Action: plan.ActLVCreate, Target: filepath.Join(dir, "vg0-a")},
			&plan.Params{LVCreate: &lvm.LVCreate{VG: "vg0", Name: "a", Extents: 10}}, &plan.Params{LVRemove: &lvm.LVRemove{VG: "vg0", Name: "a"}}),
		plan.NewStep(plan.Step{ID: "mkdir:d", Action: plan.ActMkdir, Target: "d"},
			&plan.Params{Mkdir: &plan.Mkdir{Path: filepath.Join(dir, "d"), Mode: 0o700}}, nil),
	}}
	for _, gone := range []bool{false, true} {
		t.Run(map[bool]string{false: "present", true: "gone"}[gone], func(t *testing.T) {
			f := &fakeLVM{vg: "vg0", name: "a", node: filepath.Join(dir, "vg0-a")}
			jp := filepath.Join(dir, "j-"+map[bool]string{false: "present", true: "gone"}[gone])
			os.Remove(kfPath)
			os.RemoveAll(filepath.Join(dir, "d"))
			opt := Options{JournalPath: jp, Run: f}
			crashApplyAt(t, "after:mkdir:d", func() error { return Run(context.Background(), p, opt) })
			if gone {
				f.exists = false
				os.Remove(kfPath)
			}
			f.Cmds = nil
			if _, err := Rollback(context.Background(), jp, opt, RollbackOptions{}); err != nil {
				t.Fatalf("rollback: %v", err)
			}
			removed := strings.Contains(strings.Join(f.Lines(), "\n"), "lvm lvremove --yes vg0/a")
			if removed == gone {
				t.Errorf("lvremove ran: %v, with the LV gone: %v\n%s", removed, gone, strings.Join(f.Lines(), "\n"))
			}
			if _, err := os.Stat(kfPath); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("key file after the rollback: %v", err)
			}
		})
	}
}
