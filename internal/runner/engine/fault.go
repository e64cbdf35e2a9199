package engine

import (
	"os"
	"sync"
	"syscall"
)

// FaultEnv names the one fault-injection hook of the crash matrices:
// CRYPTSHIFT_FAULT=POINT makes the process kill itself with SIGKILL at
// POINT, exactly as kill -9 or a power cut there would. The engine fires
//
//	begin:STEP   once the step's start record is on disk, before Do
//	after:STEP   once the step's done record is on disk
//	undone:STEP  once an undo step's undone record is on disk
//
// and clients fire their own points inside long steps with Fault (migrate:
// copy:DISK while a copy writes, job:DISK:copy while a block job runs,
// state:DISK:STATE once a disk's state is journalled). Unset, nothing
// happens.
const FaultEnv = "CRYPTSHIFT_FAULT"

var (
	faultMu   sync.Mutex
	faultHook = fromEnv(os.Getenv(FaultEnv))
)

func fromEnv(want string) func(string) {
	if want == "" {
		return nil
	}
	return func(point string) {
		if point == want {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // SIGKILL is not delivered synchronously
		}
	}
}

// Fault fires an injection point.
func Fault(point string) {
	faultMu.Lock()
	h := faultHook
	faultMu.Unlock()
	if h != nil {
		h(point)
	}
}

// FaultsEnabled reports whether a fault hook is set (clients use it to
// start watchers that only the crash tests need).
func FaultsEnabled() bool {
	faultMu.Lock()
	defer faultMu.Unlock()
	return faultHook != nil
}

// SetFault replaces the fault hook (unit tests: a hook that panics out of
// the run, or cancels it, at a point) and returns the function that puts
// the previous one back.
func SetFault(h func(point string)) (restore func()) {
	faultMu.Lock()
	prev := faultHook
	faultHook = h
	faultMu.Unlock()
	return func() {
		faultMu.Lock()
		faultHook = prev
		faultMu.Unlock()
	}
}
