// Package journal is an append-only, fsync'd log of JSON records, one per
// line. apply and migrate write a record before and after every step, so a
// crash, kill -9 or power loss at any point leaves a journal that says
// exactly what was started and what was finished.
//
// A torn last line (the process died mid-write) is ignored on read: the
// record it would have held was never acknowledged, so the step it describes
// is treated as not recorded and re-checked by its postcondition.
//
// Journals never hold secrets; callers pass only references to them.
package journal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Record is one journal line. Data carries the caller's payload.
type Record struct {
	Seq  int             `json:"seq"`
	Time time.Time       `json:"time"`
	Type string          `json:"type"`
	Data json.RawMessage `json:"data,omitempty"`
}

// Journal is an open journal file, exclusively locked by this process.
type Journal struct {
	path string
	f    *os.File
	seq  int
	now  func() time.Time
}

// ErrLocked is returned when another process holds the journal.
var ErrLocked = errors.New("journal is in use by another cryptshift process")

// Create makes a new journal at path; it refuses to overwrite one.
func Create(path string) (*Journal, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("cannot create journal directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("cannot create journal %s: it exists; use --resume to continue it or remove it after a rollback", path)
		}
		return nil, fmt.Errorf("cannot create journal %s: %w", path, err)
	}
	if err := lock(f); err != nil {
		f.Close()
		return nil, err
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		f.Close()
		return nil, err
	}
	return &Journal{path: path, f: f, now: time.Now}, nil
}

// Open opens an existing journal for appending and returns its records.
func Open(path string) (*Journal, []Record, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot open journal %s: %w", path, err)
	}
	if err := lock(f); err != nil {
		f.Close()
		return nil, nil, err
	}
	recs, good, err := readAll(path)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	// Cut a torn tail so the next append starts on a clean line.
	if st, err := f.Stat(); err == nil && st.Size() != good {
		if err := f.Truncate(good); err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("cannot repair journal %s: %w", path, err)
		}
	}
	j := &Journal{path: path, f: f, now: time.Now}
	if len(recs) > 0 {
		j.seq = recs[len(recs)-1].Seq
	}
	return j, recs, nil
}

// Read returns the records of a journal without locking it.
func Read(path string) ([]Record, error) {
	recs, _, err := readAll(path)
	return recs, err
}

// Path is where the journal lives.
func (j *Journal) Path() string { return j.path }

// Append writes one record and fsyncs before returning.
func (j *Journal) Append(typ string, data any) (Record, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return Record{}, fmt.Errorf("cannot encode journal record: %w", err)
	}
	j.seq++
	rec := Record{Seq: j.seq, Time: j.now().UTC(), Type: typ, Data: raw}
	line, err := json.Marshal(rec)
	if err != nil {
		return Record{}, fmt.Errorf("cannot encode journal record: %w", err)
	}
	line = append(line, '\n')
	if _, err := j.f.Write(line); err != nil {
		return Record{}, fmt.Errorf("cannot write journal %s: %w", j.path, err)
	}
	if err := j.f.Sync(); err != nil {
		return Record{}, fmt.Errorf("cannot sync journal %s: %w", j.path, err)
	}
	return rec, nil
}

// Close releases the lock.
func (j *Journal) Close() error { return j.f.Close() }

func lock(f *os.File) error {
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("cannot lock journal %s: %w", f.Name(), ErrLocked)
		}
		return fmt.Errorf("cannot lock journal %s: %w", f.Name(), err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("cannot sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("cannot sync directory %s: %w", dir, err)
	}
	return nil
}

// readAll parses complete lines; it returns the records and the byte length
// of the well-formed prefix. Only a torn final line (no newline yet, or
// cut mid-record by a crash) is dropped; any other line that is not a
// record is an error naming its place, so no record after it is lost
// silently. Lines have no length limit: a header carries a whole plan.
func readAll(path string) ([]Record, int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, fmt.Errorf("cannot read journal %s: %w", path, err)
	}
	var recs []Record
	var good int64
	for good < int64(len(b)) {
		nl := bytes.IndexByte(b[good:], '\n')
		if nl < 0 { // last line without its newline: torn
			break
		}
		line := b[good : good+int64(nl)]
		end := good + int64(nl) + 1
		var r Record
		if err := json.Unmarshal(line, &r); err != nil || r.Type == "" {
			if end == int64(len(b)) { // a torn final line
				break
			}
			if err == nil {
				err = errors.New("no record type")
			}
			return nil, 0, fmt.Errorf("cannot read journal %s: the record at byte %d (line %d) is unreadable: %w; "+
				"the records after it cannot be trusted either: keep the file for inspection and do not resume from it", path, good, len(recs)+1, err)
		}
		recs = append(recs, r)
		good = end
	}
	return recs, good, nil
}
