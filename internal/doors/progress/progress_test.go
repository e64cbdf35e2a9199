package progress

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// clockAt returns a fake clock that the test moves with the returned func.
func clockAt() (func() time.Time, func(time.Duration)) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return func() time.Time { return now }, func(d time.Duration) { now = now.Add(d) }
}

const (
	gib = int64(1) << 30
	mib = int64(1) << 20
)

func TestBytes(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536 * 1024, "1.5 MiB"},
		{4 * gib, "4.0 GiB"}, {3 << 40, "3.0 TiB"},
	} {
		if got := Bytes(tc.n); got != tc.want {
			t.Errorf("Bytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestTerminal(t *testing.T) {
	now, advance := clockAt()
	var out bytes.Buffer
	r := NewTerminal(&out)
	r.now = now
	r.Start("vda", 4*gib)
	r.Update(0)
	advance(time.Second)
	r.Update(1*gib, Counter{"data", 256 * mib}, Counter{"zero", 768 * mib})
	advance(10 * time.Millisecond) // throttled: not drawn
	r.Update(1*gib+mib, Counter{"data", 257 * mib}, Counter{"zero", 768 * mib})
	advance(time.Second)
	r.Update(2*gib, Counter{"data", 512 * mib}, Counter{"zero", 1536 * mib})
	advance(2 * time.Second)
	r.Update(4*gib, Counter{"data", gib}, Counter{"zero", 3 * gib})
	r.Done(nil)
	r.Start("vdb", 0)
	r.Update(5 * mib)
	r.Done(errors.New("cannot read /dev/vdb: input/output error"))

	want := strings.Join([]string{
		"\rvda   0% [........................................]  0 B/4.0 GiB",
		"\rvda  25% [###............]  1.0 GiB/4.0 GiB  1.0 GiB/s  ETA 0:03  data 256.0 MiB",
		"\rvda  50% [######......]  2.0 GiB/4.0 GiB  1018.9 MiB/s  ETA 0:02  data 512.0 MiB",
		"\rvda 100% [##############]  4.0 GiB/4.0 GiB  1021.4 MiB/s  ETA 0:00  data 1.0 GiB",
		"\rvda 100% [###############]  4.0 GiB/4.0 GiB  in 0:04  data 1.0 GiB  zero 3.0 GiB\n",
		"\rvdb   0% [........................................]  5.0 MiB",
		"\rvdb  failed: cannot read /dev/vdb: input/output error       \n",
	}, "")
	if got := out.String(); got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
	for i, line := range strings.Split(out.String(), "\r")[1:] {
		if n := len(strings.TrimSuffix(line, "\n")); n > 80 {
			t.Errorf("line %d is %d columns wide, want at most 80: %q", i, n, line)
		}
	}
}

func TestTerminalWide(t *testing.T) {
	now, advance := clockAt()
	var out bytes.Buffer
	r := NewTerminal(&out)
	r.now = now
	r.SetWidth(200)
	r.Start("vda", 4*gib)
	r.Update(0)
	advance(time.Second)
	r.Update(1*gib, Counter{"data", 256 * mib}, Counter{"zero", 768 * mib})
	want := "\rvda   0% [........................................]  0 B/4.0 GiB" +
		"\rvda  25% [##########..............................]  1.0 GiB/4.0 GiB  1.0 GiB/s  ETA 0:03  data 256.0 MiB  zero 768.0 MiB"
	if got := out.String(); got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
}

func TestJSON(t *testing.T) {
	now, advance := clockAt()
	var out bytes.Buffer
	r := NewJSON(&out)
	r.now = now
	r.Start("vda", 4*gib)
	r.Update(0)
	advance(500 * time.Millisecond)
	r.Update(gib/2, Counter{"data", mib}) // throttled: within a second
	advance(1500 * time.Millisecond)
	r.Update(2*gib, Counter{"zero", gib}, Counter{"data", gib})
	advance(time.Second)
	r.Update(4*gib, Counter{"zero", 3 * gib}, Counter{"data", gib})
	r.Done(nil)
	r.Start("vdb", mib)
	r.Done(errors.New("cannot open target /dev/mapper/x: no such file"))

	want := `{"event":"start","task":"vda","done":0,"total":4294967296,"percent":0}
{"event":"progress","task":"vda","done":0,"total":4294967296,"percent":0}
{"event":"progress","task":"vda","done":2147483648,"total":4294967296,"percent":50,"rate_bytes_per_second":1073741824,"eta_seconds":2,"counters":{"data":1073741824,"zero":1073741824}}
{"event":"progress","task":"vda","done":4294967296,"total":4294967296,"percent":100,"rate_bytes_per_second":1431655765,"eta_seconds":0,"counters":{"data":1073741824,"zero":3221225472}}
{"event":"done","task":"vda","done":4294967296,"total":4294967296,"percent":100,"elapsed_seconds":3,"counters":{"data":1073741824,"zero":3221225472}}
{"event":"start","task":"vdb","done":0,"total":1048576,"percent":0}
{"event":"done","task":"vdb","done":0,"total":1048576,"percent":0,"elapsed_seconds":0,"error":"cannot open target /dev/mapper/x: no such file"}
`
	if got := out.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	for i, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var ev Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Errorf("line %d is not an Event: %v", i, err)
		}
	}
}

func TestDiscard(t *testing.T) {
	// Discard must accept the whole protocol without output or panic.
	var r Reporter = Discard
	r.Start("x", 1)
	r.Update(1, Counter{"data", 1})
	r.Done(errors.New("x"))
	if _, ok := r.(discard); !ok {
		t.Errorf("Discard is %T", r)
	}
}
