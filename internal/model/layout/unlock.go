package layout

import (
	"fmt"
	"net/url"
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
	if u == nil {
		return
	}
	const at = "$.keys.unlock"
	if err := CheckKernelIP(u.IP); err != nil {
		rep.Errorf(at+".ip", "use dhcp or CLIENT::GATEWAY:NETMASK:HOSTNAME:INTERFACE:off", "%v", err)
	}
	for i, m := range u.NetworkModules {
		if !moduleName.MatchString(m) {
			rep.Errorf(fmt.Sprintf("%s.networkModules[%d]", at, i), "name a kernel module such as virtio_net or e1000e", "not a module name: %s", Short(m))
		}
	}
	if s := u.SSH; s != nil {
		if len(s.AuthorizedKeys) == 0 {
			rep.Errorf(at+".ssh.authorizedKeys", "list the admin's public key(s), e.g. the line from ~/.ssh/id_ed25519.pub",
				"SSH unlock needs at least one authorized key")
		}
		for i, k := range s.AuthorizedKeys {
			if !sshKeyType.MatchString(strings.TrimSpace(k)) {
				rep.Errorf(fmt.Sprintf("%s.ssh.authorizedKeys[%d]", at, i), "paste one public key line (TYPE BASE64 [COMMENT]), without options",
					"not an SSH public key: %s", Short(k))
			}
		}
		if s.Port < 0 || s.Port > 65535 {
			rep.Errorf(at+".ssh.port", "use a TCP port between 1 and 65535", "port %d is out of range", s.Port)
		}
	}
	for i, t := range u.Tang {
		p := fmt.Sprintf("%s.tang[%d]", at, i)
		if pu, err := url.Parse(t.URL); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" || strings.ContainsAny(t.URL, " '\"") {
			rep.Errorf(p+".url", "use the server's URL, e.g. http://tang.example:7500", "not an http(s) URL: %s", Short(t.URL))
		}
		if !thumbprint.MatchString(t.Thumbprint) {
			rep.Errorf(p+".thumbprint", "pin the server's signing key: tang-show-keys on the server prints its S256 thumbprint",
				"not a key thumbprint: %s", Short(t.Thumbprint))
		}
	}
	if t := u.TPM2; t != nil {
		if t.PCRs != "" && !pcrList.MatchString(t.PCRs) {
			rep.Errorf(at+".tpm2.pcrs", "list PCR numbers 0-23 separated by commas, e.g. \"7\"", "not a PCR list: %s", Short(t.PCRs))
		}
		if t.PCRBank != "" && t.PCRBank != "sha256" && t.PCRBank != "sha1" {
			rep.Errorf(at+".tpm2.pcrBank", "use sha256", "unknown PCR bank %s", Short(t.PCRBank))
		}
		rep.Warnf(at+".tpm2", "add a PIN-less TPM2 binding only where nobody else can boot the machine, or rely on tang",
			"TPM2 without a PIN unlocks the root for anyone who boots this machine unchanged (a stolen server boots and opens its disks); PCR 7 survives kernel and GRUB updates, more PCRs stop a changed boot chain but need a re-bind after every update")
	}
}

// thumbprint is a base64url JWK thumbprint: S256 (43) or S1 (27).
var thumbprint = regexp.MustCompile(`^[A-Za-z0-9_-]{27}([A-Za-z0-9_-]{16})?$`)

// pcrList is a comma-separated list of PCR indexes 0-23.
var pcrList = regexp.MustCompile(`^([0-9]|1[0-9]|2[0-3])(,([0-9]|1[0-9]|2[0-3]))*$`)

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
