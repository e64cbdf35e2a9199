package progress

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Terminal draws one line per task, redrawn in place with a carriage return:
//
//	vda  42% [########...........]  1.7 GiB/4.0 GiB  1.9 GiB/s  ETA 0:02  data 512.0 MiB  zero 1.2 GiB
//
// Use it only when the output is a terminal; pipes and logs want JSON.
type Terminal struct {
	w        io.Writer
	width    int
	interval time.Duration
	now      func() time.Time

	mu    sync.Mutex
	m     meter
	drawn time.Time
	last  int // length of the last drawn line, to blank a shorter redraw
}

// NewTerminal draws on w, at most ten times a second, 80 columns wide.
func NewTerminal(w io.Writer) *Terminal {
	return &Terminal{w: w, width: 80, interval: 100 * time.Millisecond, now: time.Now}
}

// SetWidth sets the line width in columns (from term.GetSize, say).
func (t *Terminal) SetWidth(cols int) { t.width = cols }

func (t *Terminal) Start(task string, total int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.m.begin(task, total, t.now())
	t.drawn, t.last = time.Time{}, 0
}

func (t *Terminal) Update(done int64, counters ...Counter) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	t.m.update(done, counters, now)
	if !t.drawn.IsZero() && now.Sub(t.drawn) < t.interval {
		return
	}
	t.drawn = now
	t.draw(t.line(now, -1), false)
}

func (t *Terminal) Done(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	line := t.line(now, now.Sub(t.m.start))
	if err != nil {
		line = fmt.Sprintf("%s  failed: %v", t.m.task, err)
	}
	t.draw(line, true)
}

// line formats the current state; elapsed >= 0 replaces the ETA with the
// total time taken (for the final line).
func (t *Terminal) line(now time.Time, elapsed time.Duration) string {
	m := &t.m
	var tail strings.Builder
	if m.total > 0 {
		fmt.Fprintf(&tail, "  %s/%s", Bytes(m.done), Bytes(m.total))
	} else {
		fmt.Fprintf(&tail, "  %s", Bytes(m.done))
	}
	if elapsed >= 0 {
		fmt.Fprintf(&tail, "  in %s", clock(elapsed))
	} else {
		if r := m.rate(now); r > 0 {
			fmt.Fprintf(&tail, "  %s/s", Bytes(int64(r)))
		}
		if eta := m.eta(now); eta >= 0 {
			fmt.Fprintf(&tail, "  ETA %s", clock(eta))
		}
	}
	head := fmt.Sprintf("%s %3.0f%% ", m.task, m.percent())
	// Counters come last and only as many as fit beside a bar of at least
	// 10 columns: a line wider than the terminal wraps, and a wrapped line
	// cannot be redrawn with a carriage return.
	const minBar = 10
	for _, c := range m.counters {
		s := fmt.Sprintf("  %s %s", c.Name, Bytes(c.Value))
		if t.width > 0 && len(head)+minBar+2+tail.Len()+len(s) > t.width {
			break
		}
		tail.WriteString(s)
	}
	barw := min(max(t.width-len(head)-tail.Len()-2, minBar), 40)
	fill := int(float64(barw) * m.percent() / 100)
	line := head + "[" + strings.Repeat("#", fill) + strings.Repeat(".", barw-fill) + "]" + tail.String()
	if t.width > 0 && len(line) > t.width {
		line = line[:t.width]
	}
	return line
}

func (t *Terminal) draw(line string, final bool) {
	pad := ""
	if n := t.last - len(line); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	end := ""
	if final {
		end = "\n"
	}
	fmt.Fprintf(t.w, "\r%s%s%s", line, pad, end)
	t.last = len(line)
	if final {
		t.last = 0
	}
}

// clock formats d as m:ss or h:mm:ss.
func clock(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
