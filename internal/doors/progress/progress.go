// Package progress shows how far a long task has got: a one-line bar with
// rate and ETA for terminals, and JSON lines for machines (--progress=json).
//
// Producers (the copier, apply's wipe and mkfs steps) call a Reporter; they
// do not format anything themselves. A Reporter is safe for use by several
// goroutines and throttles its own output, so producers may call Update as
// often as they like (the copier calls it once per chunk).
//
//	r := progress.NewTerminal(os.Stderr)
//	r.Start("vda", total)
//	r.Update(done, progress.Counter{Name: "data", Value: n})
//	r.Done(err)
package progress

import (
	"fmt"
	"time"
)

// Counter is a named sub-total shown next to the bar and in JSON events, for
// example the data and zero bytes of a copy.
type Counter struct {
	Name  string
	Value int64
}

// Reporter receives the progress of one task at a time.
type Reporter interface {
	// Start begins a task; total is in bytes, 0 when unknown.
	Start(task string, total int64)
	// Update says that done bytes of the total are finished.
	Update(done int64, counters ...Counter)
	// Done ends the task; err is nil on success.
	Done(err error)
}

// Discard is a Reporter that shows nothing.
var Discard Reporter = discard{}

type discard struct{}

func (discard) Start(string, int64)      {}
func (discard) Update(int64, ...Counter) {}
func (discard) Done(error)               {}

// meter turns (time, done) samples into a rate and an ETA. The rate is the
// average since the first Update rather than an instantaneous one: a copy
// alternates fast zero runs and slower data runs, and an instantaneous rate
// makes the ETA jump around; the first Update is the base so that a resumed
// copy does not count the bytes an earlier run did.
type meter struct {
	task     string
	total    int64
	start    time.Time
	base     int64
	baseTime time.Time
	seen     bool
	done     int64
	counters []Counter
}

func (m *meter) begin(task string, total int64, now time.Time) {
	*m = meter{task: task, total: total, start: now}
}

func (m *meter) update(done int64, counters []Counter, now time.Time) {
	if !m.seen {
		m.seen, m.base, m.baseTime = true, done, now
	}
	m.done = done
	m.counters = append(m.counters[:0], counters...)
}

// rate is in bytes per second; 0 until it can be measured.
func (m *meter) rate(now time.Time) float64 {
	d := now.Sub(m.baseTime).Seconds()
	if !m.seen || d <= 0 || m.done <= m.base {
		return 0
	}
	return float64(m.done-m.base) / d
}

// eta is the estimated time left; negative when unknown.
func (m *meter) eta(now time.Time) time.Duration {
	r := m.rate(now)
	if r <= 0 || m.total <= 0 {
		return -1
	}
	left := m.total - m.done
	if left < 0 {
		left = 0
	}
	return time.Duration(float64(left) / r * float64(time.Second))
}

func (m *meter) percent() float64 {
	if m.total <= 0 {
		return 0
	}
	p := 100 * float64(m.done) / float64(m.total)
	return min(p, 100)
}

// Bytes formats n with binary units, e.g. "1.5 GiB", as lsblk and
// cryptsetup do.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
