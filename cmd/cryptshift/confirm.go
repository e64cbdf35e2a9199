package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/cryptshift/cryptshift/internal/doors/secrets"
	"github.com/cryptshift/cryptshift/internal/exitcode"
)

// The confirmations and the recovery key, the same for apply, migrate and
// rollback. Questions go to the controlling terminal, never to stdin,
// which scripts may use for data; a script says --yes instead.

// openTTY opens the controlling terminal, or says why it cannot.
func openTTY(why string) (*os.File, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil || !term.IsTerminal(int(tty.Fd())) {
		if tty != nil {
			tty.Close()
		}
		return nil, usageError("%s: there is no terminal to ask on", why)
	}
	return tty, nil
}

// confirm asks question on the terminal; only "yes" (or, when !strict,
// "y") goes on. refusal is the error's text (what was not done).
func confirm(question, refusal string, strict bool) error {
	tty, err := openTTY(refusal + "; review what it does and pass --yes")
	if err != nil {
		return err
	}
	defer tty.Close()
	want := "Type yes to continue: "
	if !strict {
		want = "[y/N] "
	}
	fmt.Fprintf(tty, "\n%s %s", question, want)
	var answer string
	fmt.Fscanln(tty, &answer)
	answer = strings.ToLower(strings.TrimSpace(answer))
	if answer == "yes" || (!strict && answer == "y") {
		return nil
	}
	return exitcode.With(exitcode.Refused, fmt.Errorf("%s: not confirmed", refusal))
}

// newRecoveryKey makes a recovery key and hands it to the admin before any
// keyslot uses it (so a crash cannot lose it): written to file (mode
// 0400, never over an existing file, atomically), or shown once on the
// terminal and confirmed as written down.
func newRecoveryKey(w io.Writer, file, opens string) ([]byte, error) {
	k, err := secrets.NewRecoveryKey()
	if err != nil {
		return nil, err
	}
	if file != "" {
		if err := secrets.WriteNew(file, k); err != nil {
			secrets.Wipe(k)
			return nil, exitcode.With(exitcode.Usage, fmt.Errorf("%w; choose a path that does not exist yet", err))
		}
		fmt.Fprintf(w, "The recovery key was written to %s (mode 0400). Keep it offline; it opens %s.\n", file, opens)
		return k, nil
	}
	tty, err := openTTY("cannot show the recovery key; pass --recovery-key-file FILE")
	if err != nil {
		secrets.Wipe(k)
		return nil, err
	}
	defer tty.Close()
	fmt.Fprintf(tty, "\nRecovery key (shown once; write it down and keep it offline):\n\n    %s\n\nType yes once it is written down: ", k)
	var answer string
	fmt.Fscanln(tty, &answer)
	fmt.Fprint(tty, "\033[2J\033[H") // clear the screen so the key does not linger
	if answer != "yes" {
		secrets.Wipe(k)
		return nil, exitcode.With(exitcode.Refused, errors.New("the recovery key was not confirmed; nothing was changed"))
	}
	return k, nil
}

// oldRecoveryKey reads back the recovery key of a run being resumed: from
// file (the flag's, else the one recorded), or asked for on the terminal.
func oldRecoveryKey(file, what string) ([]byte, error) {
	var k []byte
	var err error
	if file != "" {
		k, err = secrets.FromFile(file)
	} else {
		k, err = secrets.Prompt("Recovery key shown when this "+what+" started: ", false)
	}
	if err != nil {
		return nil, exitcode.With(exitcode.Usage, err)
	}
	return k, nil
}
