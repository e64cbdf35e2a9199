package layout

import (
	"fmt"
	"regexp"
	"strings"
)

// sshKeyType matches the key types OpenSSH and dropbear accept in an
// authorized_keys line (options before the type are not allowed here:
// the initramfs's dropbear is configured with -s -j -k already).
var sshKeyType = regexp.MustCompile(`^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,2}( [^\x00-\x1f\x7f]*)?$`)

// moduleName is a kernel module name as modprobe takes it.
var moduleName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,56}$`)

// SSHPort is dropbear's port when the layout names none.
const SSHPort = 22

// validateUnlock checks keys.unlock: what goes into the initramfs must be
// well-formed, since a bad line there is found only at the next boot, with
// nobody at the console.
func validateUnlock(l *Layout, rep *Report) {
	u := l.Keys.Unlock
	if u == nil || u.SSH == nil {
		return
	}
	s := u.SSH
	const at = "$.keys.unlock.ssh"
	if len(s.AuthorizedKeys) == 0 {
		rep.Errorf(at+".authorizedKeys", "list the admin's public key(s), e.g. the line from ~/.ssh/id_ed25519.pub",
			"SSH unlock needs at least one authorized key")
	}
	for i, k := range s.AuthorizedKeys {
		if !sshKeyType.MatchString(strings.TrimSpace(k)) {
			rep.Errorf(fmt.Sprintf("%s.authorizedKeys[%d]", at, i), "paste one public key line (TYPE BASE64 [COMMENT]), without options",
				"not an SSH public key: %s", Short(k))
		}
	}
	if err := CheckKernelIP(s.IP); err != nil {
		rep.Errorf(at+".ip", "use dhcp or CLIENT::GATEWAY:NETMASK:HOSTNAME:INTERFACE:off", "%v", err)
	}
	if s.Port < 0 || s.Port > 65535 {
		rep.Errorf(at+".port", "use a TCP port between 1 and 65535", "port %d is out of range", s.Port)
	}
	for i, m := range s.NetworkModules {
		if !moduleName.MatchString(m) {
			rep.Errorf(fmt.Sprintf("%s.networkModules[%d]", at, i), "name a kernel module such as virtio_net or e1000e", "not a module name: %s", Short(m))
		}
	}
}

// CheckKernelIP accepts the ip= values the host move writes to the kernel
// command line: empty (dhcp), dhcp, or the static form of the kernel's
// Documentation/admin-guide/nfs/nfsroot.rst
// (client:server:gw:netmask:hostname:device:autoconf).
func CheckKernelIP(ip string) error {
	if ip == "" || ip == "dhcp" {
		return nil
	}
	if strings.ContainsAny(ip, " \t\n\"'\\") {
		return fmt.Errorf("ip=%s contains blanks or quotes", Short(ip))
	}
	f := strings.Split(ip, ":")
	if len(f) < 7 {
		return fmt.Errorf("ip=%s has %d fields, want 7 (client:server:gateway:netmask:hostname:interface:autoconf)", Short(ip), len(f))
	}
	if f[0] == "" && f[6] != "dhcp" {
		return fmt.Errorf("ip=%s gives neither a client address nor dhcp", Short(ip))
	}
	return nil
}
