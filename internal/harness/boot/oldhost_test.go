package boot

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"
)

// bootTimeout bounds one boot under TCG on a shared 2-core machine.
const bootTimeout = 10 * time.Minute

// TestBootOldHost builds (or reuses) the old host and boots it: Postfix,
// Dovecot and sshd run, alice's three mails are in her Maildir, and a mail
// sent through Postfix is delivered there by dovecot-lda.
// oldHostChecked says where the old host was already booted from its own
// image and checked with checkOldHost in this test binary (TestBootMigrateHost
// does so before it moves a host it has not moved before, and runs first).
// TestBootOldHost then has nothing left to prove and does not spend another
// TCG boot on it; run alone (-run TestBootOldHost) it boots the old host.
var oldHostChecked string

func TestBootOldHost(t *testing.T) {
	Require(t)
	if oldHostChecked != "" {
		t.Logf("the old host was booted and checked (services, %d mails, a mail delivered through Postfix) by %s", Mails, oldHostChecked)
		return
	}
	ctx := context.Background()
	oh, err := EnsureOldHost(ctx, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	dir := RunDir(t)
	root, err := Overlay(ctx, oh.Image, dir+"/oldroot.qcow2")
	if err != nil {
		t.Fatal(err)
	}
	root.Serial = "oldroot"
	vm := Boot(t, ctx, Machine{Name: "oldhost", Dir: dir, Kernel: oh.Kernel, Initrd: oh.Initrd, Append: oh.Append(), Disks: []Disk{root}}, oh.Key)
	up, err := vm.WaitMultiUser(ctx, bootTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("old host reached multi-user %s after qemu started", up.Round(time.Second))

	checkOldHost(t, ctx, vm)
	if err := vm.PowerOff(ctx, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
}

// checkOldHost checks a booted old host: Postfix, Dovecot and sshd are
// active, alice has her Mails, and a mail sent through Postfix reaches her
// Maildir through dovecot-lda (she then has Mails+1).
func checkOldHost(t testing.TB, ctx context.Context, vm *VM) {
	t.Helper()
	out, err := vm.SSH.Run(ctx, "systemctl is-active postfix dovecot ssh", nil)
	if err != nil {
		t.Fatalf("mail services are not all active: %v\n%s", err, out)
	}
	if n := mailCount(t, ctx, vm); n != Mails {
		t.Fatalf("alice has %d mails, want %d", n, Mails)
	}
	if _, err := vm.SSH.Run(ctx, "printf 'Subject: delivered live\\n\\nhello\\n' | /usr/sbin/sendmail alice", nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for mailCount(t, ctx, vm) != Mails+1 {
		if time.Now().After(deadline) {
			log, _ := vm.SSH.Run(ctx, "journalctl -u postfix@- -u dovecot --no-pager | tail -20", nil)
			t.Fatalf("the mail sent through postfix never reached alice's Maildir; mail log:\n%s", log)
		}
		time.Sleep(2 * time.Second)
	}
}

// mailCount asks Dovecot (doveadm fetch, an independent reader of the
// Maildir) how many mails alice's INBOX holds.
func mailCount(t testing.TB, ctx context.Context, vm *VM) int {
	t.Helper()
	out, err := vm.SSH.Run(ctx, "doveadm -f flow fetch -u alice guid mailbox INBOX ALL | grep -c '^guid=' || true", nil)
	if err != nil {
		t.Fatalf("cannot count alice's mails: %v", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("cannot count alice's mails: doveadm printed %q", out)
	}
	return n
}
