package layout

import (
	"strings"
	"testing"
)

func withUnlock(t *testing.T, unlock string) *Report {
	t.Helper()
	if !strings.Contains(base, "\nkeys:\n") {
		t.Fatal("the base layout has no keys section")
	}
	_, rep := Parse("t.yaml", []byte(strings.Replace(base, "\nkeys:\n", "\nkeys:\n  unlock:\n"+unlock, 1)))
	return rep
}

func TestUnlockValid(t *testing.T) {
	rep := withUnlock(t, `    ip: "192.0.2.10::192.0.2.1:255.255.255.0:mx1:eno1:off"
    networkModules: [e1000e, virtio_net]
    ssh:
      authorizedKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE admin@laptop"]
      port: 2222
    tang:
      - {url: "http://tang.internal:7500", thumbprint: voU6475c-6TIakg7U7LoBHrS9ESNwU98S-1Gr2IDA2k}
    tpm2: {pcrs: "7", pcrBank: sha256}
`)
	if rep.HasErrors() {
		t.Fatal(rep.Error())
	}
	// TPM2 without a PIN is worth a warning, with the PCR trade-off.
	found := false
	for _, w := range rep.Warnings() {
		found = found || strings.Contains(w.String(), "TPM2 without a PIN")
	}
	if !found {
		t.Errorf("warnings %v, want the TPM2 one", rep.Warnings())
	}
}

func TestUnlockInvalid(t *testing.T) {
	for _, tc := range []struct{ unlock, want string }{
		{"    ssh: {authorizedKeys: []}\n", "$.keys.unlock.ssh.authorizedKeys"},
		{"    ssh: {authorizedKeys: [\"command=\\\"/bin/sh\\\" ssh-ed25519 AAAA x\"]}\n", "not an SSH public key"},
		{"    ip: \"10.0.0.1 rd.break\"\n", "blanks or quotes"},
		{"    ip: \"10.0.0.1:x\"\n", "want 7"},
		{"    networkModules: [\"e1000e;reboot\"]\n", "not a module name"},
		{"    tang: [{url: \"ftp://t\", thumbprint: voU6475c-6TIakg7U7LoBHrS9ESNwU98S-1Gr2IDA2k}]\n", "not an http(s) URL"},
		{"    tang: [{url: \"http://t\", thumbprint: short}]\n", "not a key thumbprint"},
		{"    tpm2: {pcrs: \"7,24\"}\n", "not a PCR list"},
		{"    tpm2: {pcrBank: md5}\n", "unknown PCR bank"},
		{"    ssh: {authorizedKeys: [\"ssh-ed25519 AAAA x\"], port: 70000}\n", "out of range"},
	} {
		rep := withUnlock(t, tc.unlock)
		if !rep.HasErrors() || !strings.Contains(rep.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error naming %q", tc.unlock, rep.Error(), tc.want)
		}
	}
}
