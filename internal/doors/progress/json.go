package progress

import (
	"encoding/json"
	"io"
	"math"
	"sync"
	"time"
)

// Event is one JSON line written by JSON. Keys are stable; consumers must
// ignore keys they do not know.
type Event struct {
	Event    string           `json:"event"` // "start", "progress" or "done"
	Task     string           `json:"task"`
	Done     int64            `json:"done"`
	Total    int64            `json:"total"`
	Percent  float64          `json:"percent"`
	Rate     int64            `json:"rate_bytes_per_second,omitempty"`
	ETA      *float64         `json:"eta_seconds,omitempty"`
	Elapsed  *float64         `json:"elapsed_seconds,omitempty"`
	Counters map[string]int64 `json:"counters,omitempty"`
	Error    string           `json:"error,omitempty"`
}

// JSON writes one Event per line: a start event, progress events at most
// once per interval (default one second, so a log stays readable), and a
// done event that always carries the final numbers.
type JSON struct {
	enc      *json.Encoder
	interval time.Duration
	now      func() time.Time

	mu    sync.Mutex
	m     meter
	drawn time.Time
}

// NewJSON writes events to w, at most one progress event a second.
func NewJSON(w io.Writer) *JSON {
	return &JSON{enc: json.NewEncoder(w), interval: time.Second, now: time.Now}
}

// SetInterval changes the minimum time between progress events.
func (j *JSON) SetInterval(d time.Duration) { j.interval = d }

func (j *JSON) Start(task string, total int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.m.begin(task, total, j.now())
	j.drawn = time.Time{}
	j.emit(Event{Event: "start", Task: task, Total: total})
}

func (j *JSON) Update(done int64, counters ...Counter) {
	j.mu.Lock()
	defer j.mu.Unlock()
	now := j.now()
	j.m.update(done, counters, now)
	if !j.drawn.IsZero() && now.Sub(j.drawn) < j.interval {
		return
	}
	j.drawn = now
	ev := j.event("progress")
	ev.Rate = int64(j.m.rate(now))
	if eta := j.m.eta(now); eta >= 0 {
		s := round(eta.Seconds())
		ev.ETA = &s
	}
	j.emit(ev)
}

func (j *JSON) Done(err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	ev := j.event("done")
	s := round(j.now().Sub(j.m.start).Seconds())
	ev.Elapsed = &s
	if err != nil {
		ev.Error = err.Error()
	}
	j.emit(ev)
}

func (j *JSON) event(kind string) Event {
	ev := Event{Event: kind, Task: j.m.task, Done: j.m.done, Total: j.m.total, Percent: round(j.m.percent())}
	if len(j.m.counters) > 0 {
		ev.Counters = make(map[string]int64, len(j.m.counters))
		for _, c := range j.m.counters {
			ev.Counters[c.Name] = c.Value
		}
	}
	return ev
}

// emit ignores write errors: losing a progress line must not fail a copy.
func (j *JSON) emit(ev Event) { _ = j.enc.Encode(ev) }

// round keeps two decimals so that events stay short and diffable.
func round(f float64) float64 { return math.Round(f*100) / 100 }
