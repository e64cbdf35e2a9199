package engine

import (
	"encoding/json"
	"fmt"

	"github.com/cryptshift/cryptshift/internal/runner/journal"
)

// Journals written before the engine existed:
//
//   - apply journals (kind apply, version 1) used this vocabulary already,
//     but their plans carry no typed step parameters; the apply client
//     refuses them with a message saying which cryptshift finishes them.
//   - migrate journals (kind migrate, version 1) had their own vocabulary:
//     "step" records with a status, "state", "event", "done" and
//     "rollback". They are translated on read, so a migration interrupted
//     before an upgrade can be resumed or rolled back after it. What this
//     cryptshift appends to such a journal is in today's vocabulary, which
//     passes through: the only name both use, "done", marks a finished
//     migration in version 1 (its data has no "step") and a finished step
//     today.

func legacyMigrate(kv kindVersion) bool { return kv.Kind == "migrate" && kv.Version == 1 }

func translateMigrateV1(recs []journal.Record) ([]journal.Record, error) {
	out := []journal.Record{recs[0]}
	for _, r := range recs[1:] {
		n := journal.Record{Seq: r.Seq, Time: r.Time}
		switch r.Type {
		case "step":
			var s struct {
				ID, Status, Error string
			}
			if err := json.Unmarshal(r.Data, &s); err != nil {
				return nil, fmt.Errorf("record %d (step): %w", r.Seq, err)
			}
			switch s.Status {
			case "begin":
				n.Type = recStart
			case "done":
				n.Type = recDone
			case "failed":
				n.Type = recFailed
			default:
				return nil, fmt.Errorf("record %d: unknown step status %q", r.Seq, s.Status)
			}
			n.Data, _ = json.Marshal(stepRecord{Step: s.ID, Error: s.Error})
		case "state":
			var s struct{ Disk, State string }
			if err := json.Unmarshal(r.Data, &s); err != nil {
				return nil, fmt.Errorf("record %d (state): %w", r.Seq, err)
			}
			n.Type = recEvent
			n.Data, _ = json.Marshal(map[string]string{"event": "state", "disk": s.Disk, "state": s.State})
		case "event":
			n.Type, n.Data = recEvent, r.Data
		case "done":
			var s struct{ Step string }
			if json.Unmarshal(r.Data, &s) == nil && s.Step != "" {
				n.Type, n.Data = recDone, r.Data // appended after the upgrade
			} else {
				n.Type, n.Data = recFinished, r.Data
			}
		case recStart, recFailed, recStopped, recFinished, recUndone, recRolledBack:
			n.Type, n.Data = r.Type, r.Data // appended after the upgrade
		case "rollback":
			var s struct{ Status string }
			if err := json.Unmarshal(r.Data, &s); err != nil {
				return nil, fmt.Errorf("record %d (rollback): %w", r.Seq, err)
			}
			if s.Status != "done" {
				continue // a rollback's start: nothing to record
			}
			n.Type = recRolledBack
		default:
			return nil, fmt.Errorf("record %d has the unknown type %q", r.Seq, r.Type)
		}
		out = append(out, n)
	}
	return out, nil
}
