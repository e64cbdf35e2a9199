package journal

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAppendReopen(t *testing.T) {
	p := filepath.Join(t.TempDir(), "j", "journal.jsonl")
	j, err := Create(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{"start", "done"} {
		if _, err := j.Append(typ, map[string]string{"step": "s1"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Create(p); err == nil {
		t.Fatal("Create overwrote an existing journal")
	}
	j.Close()
	j2, recs, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	if len(recs) != 2 || recs[0].Type != "start" || recs[1].Seq != 2 {
		t.Fatalf("got %+v", recs)
	}
	r, _ := j2.Append("next", nil)
	if r.Seq != 3 {
		t.Fatalf("got seq %d, want 3", r.Seq)
	}
}

func TestTornTailIsDropped(t *testing.T) {
	p := filepath.Join(t.TempDir(), "journal.jsonl")
	j, _ := Create(p)
	j.Append("start", map[string]int{"n": 1})
	j.Close()
	f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"seq":2,"time":"2026-01-01T00:00:00Z","type":"do`) // died mid-write
	f.Close()
	j2, recs, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("got %d records, want 1", len(recs))
	}
	j2.Append("done", nil)
	j2.Close()
	recs, err = Read(p)
	if err != nil || len(recs) != 2 || recs[1].Type != "done" || recs[1].Seq != 2 {
		t.Fatalf("after repair got %+v, %v", recs, err)
	}
}

func TestCorruptMiddleIsAnError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "journal.jsonl")
	os.WriteFile(p, []byte("garbage\n{\"seq\":1,\"type\":\"x\",\"time\":\"2026-01-01T00:00:00Z\"}\n"), 0o600)
	if _, err := Read(p); err == nil {
		t.Fatal("a corrupt record in the middle was accepted")
	}
}

func TestLockExcludesSecondWriter(t *testing.T) {
	p := filepath.Join(t.TempDir(), "journal.jsonl")
	j, _ := Create(p)
	defer j.Close()
	_, _, err := Open(p)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("got %v, want ErrLocked", err)
	}
}

// The reader used a line scanner with a 16 MiB limit: a longer record
// ended the read without an error, and every record after it was lost
// (a resume would redo finished steps). Now every record is read, and a
// record that cannot be read is an error that says where.
func TestLongRecordKeepsTheRecordsAfterIt(t *testing.T) {
	p := filepath.Join(t.TempDir(), "journal.jsonl")
	j, err := Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Append("header", map[string]string{"plan": strings.Repeat("x", 17<<20)}); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{"start", "done"} {
		if _, err := j.Append(typ, map[string]string{"step": "s1"}); err != nil {
			t.Fatal(err)
		}
	}
	j.Close()
	recs, err := Read(p)
	if err != nil || len(recs) != 3 || recs[2].Type != "done" {
		t.Fatalf("got %d records (%v), want header, start, done", len(recs), err)
	}
}

func TestUnreadableRecordNamesItsPlace(t *testing.T) {
	p := filepath.Join(t.TempDir(), "journal.jsonl")
	good := `{"seq":1,"type":"start","time":"2026-01-01T00:00:00Z"}` + "\n"
	os.WriteFile(p, []byte(good+"{not json\n"+good), 0o600)
	_, err := Read(p)
	if err == nil || !strings.Contains(err.Error(), "record at byte 55 (line 2) is unreadable") || !strings.Contains(err.Error(), "do not resume") {
		t.Fatalf("got %v", err)
	}
}
