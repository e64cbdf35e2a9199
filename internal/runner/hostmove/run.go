package hostmove

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/runner/engine"
)

// header is the journal's first record: what was moved where.
type header struct {
	Kind     string   `json:"kind"`
	Version  int      `json:"version"`
	Layout   string   `json:"layout"`
	Target   string   `json:"target"`
	Services []string `json:"services,omitempty"`
}

// Plan is the move as a plan document: the steps that Run carries out,
// in order, exactly as they run.
func (m *Move) Plan() *plan.Plan {
	p := &plan.Plan{APIVersion: plan.APIVersion, Kind: plan.Kind, Layout: m.o.Layout.Name, Root: m.o.Target,
		Steps: []plan.Step{}, Crypttab: []plan.CrypttabEntry{}, Fstab: []plan.FstabEntry{}, Secrets: []plan.Secret{}}
	for _, s := range m.steps {
		p.Steps = append(p.Steps, s.Entry())
	}
	p.Notes = append(p.Notes,
		"the source is only read: every filesystem is copied onto the new volumes, and the old disks stay as they are until you retire them (cryptshift verify lists them as plaintext leftovers)",
		"the journal is "+m.o.JournalPath+" (on the new root); after a crash or kill, run the same command with --resume",
	)
	if len(m.o.StopServices) > 0 {
		p.Notes = append(p.Notes, "the services stopped before the final pass stay stopped: shut down and boot from the new disks next")
	} else {
		p.Notes = append(p.Notes, "no --stop-service given: data written after the final pass starts (mail, databases) may be missing from the new root")
	}
	if m.o.InitramfsModules == ModulesDep {
		p.Notes = append(p.Notes, "MODULES=dep: the initramfs holds only the drivers this machine uses now; moving the disks to other hardware needs MODULES=most and a new initramfs")
	}
	if s := m.ssh(); s != nil {
		p.Notes = append(p.Notes, "unlock over SSH: ssh root@HOST into the initramfs and run cryptroot-unlock (send the passphrase without a trailing newline when piping it); dropbear's host keys differ from the system's sshd keys")
	}
	return p
}

// Steps are the move's steps (for tests and the dry run).
func (m *Move) Steps() []engine.Step { return m.steps }

// JournalPath is where the move is journalled.
func (m *Move) JournalPath() string { return m.o.JournalPath }

// Run carries the move out, or continues the journalled one with Resume.
func (m *Move) Run(ctx context.Context) error {
	jp := m.host(m.o.JournalPath)
	var j *engine.Journal
	var err error
	if m.o.Resume {
		if j, err = engine.Open(jp); err != nil {
			return fmt.Errorf("cannot resume the host move: %w", err)
		}
	} else {
		if _, err := os.Stat(jp); err == nil {
			return fmt.Errorf("cannot start the host move: its journal %s exists; continue it with --resume", m.o.JournalPath)
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cannot start the host move: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(jp), 0o700); err != nil {
			return fmt.Errorf("cannot create the journal directory: %w", err)
		}
		if j, err = engine.Create(jp, header{Kind: JournalKind, Version: JournalVersion, Layout: m.o.Layout.Name, Target: m.o.Target, Services: m.o.StopServices}); err != nil {
			return err
		}
	}
	defer j.Close()
	if l := j.Log(); l.Kind != JournalKind {
		return fmt.Errorf("cannot resume the host move: %s is a %s journal", m.o.JournalPath, l.Kind)
	}
	_, err = j.Execute(ctx, m.steps, engine.Options{Report: m.o.Report, Out: m.o.Out,
		Resume: "cryptshift migrate-host --resume (with the same options)"})
	return err
}
