// Package exitcode defines cryptshift's documented exit statuses and carries
// them on errors, so only main decides how the process ends.
package exitcode

import "errors"

// Exit statuses. They are part of the CLI contract (README, --help).
const (
	OK          = 0 // success; verify: nothing FAILed
	Failure     = 1 // an operation failed; verify: at least one check FAILed
	Usage       = 2 // bad flags or arguments
	Invalid     = 3 // invalid input file: layout, inventory or plan
	Refused     = 4 // a destructive step was refused (needs --allow-destroy)
	Drift       = 5 // the system changed since the reviewed plan was made
	Interrupted = 6 // stopped by a signal at a step boundary; resumable
)

// Error attaches an exit status to an error.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// With wraps err so that the process exits with code.
func With(code int, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: code, Err: err}
}

// Of returns the exit status for err: 0 for nil, the attached code, else 1.
func Of(err error) int {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Failure
}
