package apply

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/runner/engine"
	"github.com/cryptshift/cryptshift/lvm"
)

// fakeLVM is a runner that keeps one LV's state the way lvm would: lvs
// reports it (active or not), lvcreate makes it, vgchange --activate y
// activates it; node is its device node, present while it is active.
type fakeLVM struct {
	execx.Recorder
	vg, name, node string
	exists, active bool
}

func (f *fakeLVM) Run(ctx context.Context, c execx.Cmd) (execx.Result, error) {
	f.Recorder.Run(ctx, c)
	line := c.String()
	switch {
	case strings.HasPrefix(line, "lvm lvs "):
		if !f.exists {
			return execx.Result{Stdout: []byte(`{"report":[{"lv":[]}]}`)}, nil
		}
		act := ""
		if f.active {
			act = "active"
		}
		return execx.Result{Stdout: []byte(fmt.Sprintf(`{"report":[{"lv":[{"vg_name":%q,"lv_name":%q,"lv_path":"/dev/%s/%s","lv_active":%q}]}]}`,
			f.vg, f.name, f.vg, f.name, act))}, nil
	case strings.HasPrefix(line, "lvm lvcreate "):
		f.exists = true
		f.activate()
	case strings.HasPrefix(line, "lvm lvremove "):
		f.exists, f.active = false, false
		os.Remove(f.node)
	case line == "lvm vgchange --activate y "+f.vg:
		if f.exists {
			f.activate()
		}
	}
	return execx.Result{}, nil
}

func (f *fakeLVM) activate() {
	f.active = true
	os.WriteFile(f.node, nil, 0o600)
}

// reboot is what a reboot that leaves the volume group inactive does: the
// LV is still there, its device node is not.
func (f *fakeLVM) reboot() {
	f.active = false
	os.Remove(f.node)
}

// A reboot between the crash and the resume left the volume group
// inactive: the LV apply created has no device node. The resume reported
// it "gone; vgchange -ay" and stopped; it now activates the volume group
// through the lvm door and goes on, without creating the LV again. An
// LV that really is gone is still refused.
func TestResumeActivatesAnLVAReBootLeftInactive(t *testing.T) {
	allowKeyDirs(t)
	dir := t.TempDir()
	node := filepath.Join(dir, "vg0-a")
	p := &plan.Plan{APIVersion: plan.APIVersion, Kind: plan.Kind, Layout: "t", Root: dir, Steps: []plan.Step{
		plan.NewStep(plan.Step{ID: "lvcreate:/dev/vg0/a", Action: plan.ActLVCreate, Target: node},
			&plan.Params{LVCreate: &lvm.LVCreate{VG: "vg0", Name: "a", Extents: 10}}, nil),
		plan.NewStep(plan.Step{ID: "mkdir:d", Action: plan.ActMkdir, Target: "d"},
			&plan.Params{Mkdir: &plan.Mkdir{Path: filepath.Join(dir, "d"), Mode: 0o700}}, nil),
	}}
	for _, c := range []struct {
		name     string
		gone     bool
		wantErr  string
		wantCmds string
	}{
		{name: "inactive", wantCmds: "lvm lvs, lvm vgchange --activate y vg0"},
		{name: "gone", gone: true, wantErr: "cannot resume: " + node + ", which step lvcreate:/dev/vg0/a already changed, is gone"},
	} {
		t.Run(c.name, func(t *testing.T) {
			os.RemoveAll(filepath.Join(dir, "d"))
			f := &fakeLVM{vg: "vg0", name: "a", node: node}
			jp := filepath.Join(dir, "j-"+c.name)
			opt := Options{JournalPath: jp, Run: f, Stop: func() bool { return f.exists }}
			if err := Run(context.Background(), p, opt); !errors.Is(err, engine.ErrInterrupted) {
				t.Fatalf("first run: %v", err)
			}
			f.reboot()
			if c.gone {
				f.exists = false
			}
			f.Cmds = nil
			var out bytes.Buffer
			opt.Stop, opt.Out = nil, &out
			err := Resume(context.Background(), opt)
			var cmds []string
			for _, l := range f.Lines() {
				if f := strings.Fields(l); len(f) > 1 && f[1] == "lvs" {
					l = "lvm lvs"
				}
				cmds = append(cmds, l)
			}
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %v, want %q", err, c.wantErr)
				}
				if _, err := os.Stat(filepath.Join(dir, "d")); err == nil {
					t.Error("a refused resume went on to the next step")
				}
				return
			}
			if err != nil {
				t.Fatalf("resume: %v\n%s", err, out.String())
			}
			if got := strings.Join(cmds, ", "); got != c.wantCmds {
				t.Errorf("resume ran %q, want %q (never a second lvcreate)", got, c.wantCmds)
			}
			if want := "resume: logical volume vg0/a is not active: its effect has lapsed (step lvcreate:/dev/vg0/a): re-establishing it"; !strings.Contains(out.String(), want) {
				t.Errorf("resume said %q, want %q", out.String(), want)
			}
			if _, err := os.Stat(filepath.Join(dir, "d")); err != nil {
				t.Errorf("the resume did not go on to the next step: %v", err)
			}
		})
	}
}
