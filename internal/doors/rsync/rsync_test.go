package rsync

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
)

func TestArgs(t *testing.T) {
	for _, tc := range []struct {
		c    Copy
		want string
	}{
		{Copy{Src: "/", Dst: "/target", Excludes: []string{"/target", "/tmp/*"}},
			"rsync -aHAXSx --numeric-ids --exclude=/target '--exclude=/tmp/*' / /target/"},
		{Copy{Src: "/var", Dst: "/target/var/", Delete: true},
			"rsync -aHAXSx --numeric-ids --delete /var/ /target/var/"},
		{Copy{Src: "/boot/efi", Dst: "/target/boot/efi", NoOwners: true},
			"rsync -rltDx --modify-window=1 /boot/efi/ /target/boot/efi/"},
	} {
		if got := tc.c.Cmd().String(); got != tc.want {
			t.Errorf("got  %s\nwant %s", got, tc.want)
		}
	}
}

func TestVanishedFilesAreNotAnError(t *testing.T) {
	c := Copy{Src: "/", Dst: "/target"}
	vanished := &execx.Recorder{Errors: map[string]error{"rsync": errors.New("exit status 24")}}
	// The recorder reports exit code 1; model rsync's 24 with a runner.
	if err := c.Run(context.Background(), exit(24)); err != nil {
		t.Errorf("exit 24 (files vanished): %v", err)
	}
	if err := c.Run(context.Background(), vanished); err == nil || !strings.Contains(err.Error(), "cannot copy / to /target") {
		t.Errorf("a failure: %v", err)
	}
}

type exit int

func (e exit) Run(_ context.Context, c execx.Cmd) (execx.Result, error) {
	return execx.Result{ExitCode: int(e)}, &execx.Error{Cmd: c.String(), ExitCode: int(e), Err: errors.New("exit")}
}
