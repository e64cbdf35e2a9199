package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/cryptshift/cryptshift/internal/runner/journal"
)

// The journal vocabulary, the same for every client. The first record is
// the header (the client's, with at least "kind" and "version"); then,
// per step, start and done (or failed, or stopped); events of the client
// in between; finished at the end; on rollback, undone per undo step and
// rolled-back at the end.
const (
	recHeader     = "header"
	recStart      = "start"
	recDone       = "done"
	recFailed     = "failed"
	recStopped    = "stopped"
	recFinished   = "finished"
	recEvent      = "event"
	recUndone     = "undone"
	recRolledBack = "rolled-back"
)

type stepRecord struct {
	Step    string `json:"step"`
	N       int    `json:"n,omitempty"`
	Checked bool   `json:"checked,omitempty"` // found done by its postcondition on resume
	Error   string `json:"error,omitempty"`
}

// Log is what a journal says.
type Log struct {
	Path    string
	Kind    string // the header's "kind": apply, migrate, ...
	Version int    // the header's "version"
	Header  json.RawMessage
	Began   map[string]bool   // steps with a start record (and no undone since)
	Done    map[string]bool   // steps with a done record (and no undone since)
	Failed  map[string]string // steps whose last record is failed, with the error
	// InFlight is the step that started last and has no done, failed or
	// stopped record: the one a crash interrupted.
	InFlight string
	Undone   map[string]bool
	Finished bool
	// FinishedData is the data of the last finished record.
	FinishedData json.RawMessage
	RolledBack   bool
	// Events are the client's records, in order.
	Events []json.RawMessage
}

// Journal is an open journal, locked by this process.
type Journal struct {
	j   *journal.Journal
	log *Log
}

type kindVersion struct {
	Kind    string `json:"kind"`
	Version int    `json:"version"`
}

// Create makes a new journal whose first record is header (a client
// struct with "kind" and "version" fields). It refuses to overwrite one.
func Create(path string, header any) (*Journal, error) {
	raw, err := json.Marshal(header)
	if err != nil {
		return nil, fmt.Errorf("cannot encode journal header: %w", err)
	}
	var kv kindVersion
	if err := json.Unmarshal(raw, &kv); err != nil || kv.Kind == "" || kv.Version == 0 {
		return nil, fmt.Errorf("cannot create journal %s: its header has no kind and version", path)
	}
	j, err := journal.Create(path)
	if err != nil {
		return nil, err
	}
	if _, err := j.Append(recHeader, json.RawMessage(raw)); err != nil {
		j.Close()
		return nil, err
	}
	log := newLog(path)
	log.Kind, log.Version, log.Header = kv.Kind, kv.Version, raw
	return &Journal{j: j, log: log}, nil
}

// Open opens an existing journal for appending (locked against a second
// cryptshift) and reads it.
func Open(path string) (*Journal, error) {
	j, recs, err := journal.Open(path)
	if err != nil {
		return nil, err
	}
	log, err := replay(path, recs)
	if err != nil {
		j.Close()
		return nil, err
	}
	return &Journal{j: j, log: log}, nil
}

// Read reads a journal without locking it.
func Read(path string) (*Log, error) {
	recs, err := journal.Read(path)
	if err != nil {
		return nil, err
	}
	return replay(path, recs)
}

// KindOf returns the kind of the journal at path (for the rollback verb's
// dispatch).
func KindOf(path string) (string, error) {
	l, err := Read(path)
	if err != nil {
		return "", err
	}
	return l.Kind, nil
}

// Log is what the journal says, kept up to date as records are appended.
func (j *Journal) Log() *Log { return j.log }

// Path is where the journal lives.
func (j *Journal) Path() string { return j.log.Path }

// Close releases the journal's lock.
func (j *Journal) Close() error { return j.j.Close() }

// Event appends a client record. data must be secret-free.
func (j *Journal) Event(data any) error {
	raw, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("cannot encode journal record: %w", err)
	}
	if err := j.append(recEvent, json.RawMessage(raw)); err != nil {
		return err
	}
	return nil
}

func (j *Journal) append(typ string, data any) error {
	rec, err := j.j.Append(typ, data)
	if err != nil {
		return err
	}
	return j.log.apply(rec)
}

func newLog(path string) *Log {
	return &Log{Path: path, Began: map[string]bool{}, Done: map[string]bool{}, Failed: map[string]string{}, Undone: map[string]bool{}}
}

// replay builds a Log from records; a record it cannot read is an error
// naming it, never silently dropped.
func replay(path string, recs []journal.Record) (*Log, error) {
	if len(recs) == 0 || recs[0].Type != recHeader {
		return nil, fmt.Errorf("cannot read journal %s: it does not start with a header record", path)
	}
	var kv kindVersion
	if err := json.Unmarshal(recs[0].Data, &kv); err != nil {
		return nil, fmt.Errorf("cannot read journal %s: its header: %w", path, err)
	}
	log := newLog(path)
	log.Kind, log.Version, log.Header = kv.Kind, kv.Version, recs[0].Data
	if legacyMigrate(kv) {
		var err error
		if recs, err = translateMigrateV1(recs); err != nil {
			return nil, fmt.Errorf("cannot read journal %s: %w", path, err)
		}
	}
	for _, r := range recs[1:] {
		if err := log.apply(r); err != nil {
			return nil, fmt.Errorf("cannot read journal %s: %w", path, err)
		}
	}
	return log, nil
}

func (l *Log) apply(r journal.Record) error {
	var sr stepRecord
	switch r.Type {
	case recStart, recDone, recFailed, recStopped, recUndone:
		if err := json.Unmarshal(r.Data, &sr); err != nil || sr.Step == "" {
			return fmt.Errorf("record %d (%s) names no step: %s", r.Seq, r.Type, r.Data)
		}
	}
	switch r.Type {
	case recStart:
		l.InFlight = sr.Step
		l.Began[sr.Step] = true
		delete(l.Undone, sr.Step)
	case recDone:
		l.Done[sr.Step] = true
		delete(l.Failed, sr.Step)
		if l.InFlight == sr.Step {
			l.InFlight = ""
		}
	case recFailed:
		l.Failed[sr.Step] = sr.Error
		if l.InFlight == sr.Step {
			l.InFlight = ""
		}
	case recStopped:
		if l.InFlight == sr.Step {
			l.InFlight = ""
		}
	case recFinished:
		l.Finished = true
		l.FinishedData = r.Data
	case recEvent:
		l.Events = append(l.Events, r.Data)
	case recUndone:
		l.Undone[sr.Step] = true
		delete(l.Done, sr.Step)
		delete(l.Began, sr.Step)
		if l.InFlight == sr.Step {
			l.InFlight = ""
		}
	case recRolledBack:
		l.RolledBack = true
	case recHeader:
		return fmt.Errorf("record %d is a second header", r.Seq)
	default:
		return fmt.Errorf("record %d has the unknown type %q (written by a newer cryptshift?)", r.Seq, r.Type)
	}
	return nil
}

// Archive moves a finished or rolled-back journal aside (to PATH.1,
// PATH.2, ...) so that a new run can start; an unfinished one is left for
// --resume or rollback, and refused.
func Archive(path string, resume, rollback string) error {
	l, err := Read(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !l.Finished && !l.RolledBack {
		return fmt.Errorf("cannot start: an unfinished %s is recorded in %s; continue it with: %s; or undo it with: %s", l.Kind, path, resume, rollback)
	}
	for i := 1; ; i++ {
		dst := fmt.Sprintf("%s.%d", path, i)
		if _, err := os.Lstat(dst); errors.Is(err, os.ErrNotExist) {
			if err := os.Rename(path, dst); err != nil {
				return fmt.Errorf("cannot move the finished journal %s aside: %w", path, err)
			}
			return nil
		}
	}
}
