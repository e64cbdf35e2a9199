package inventory

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/harness/testtier"
)

func losetup(t *testing.T, img string) string {
	t.Helper()
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		testtier.Unavailable(t, "losetup: "+err.Error())
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// A real GPT written by sfdisk and a real LUKS2 header written by
// cryptsetup, on loop devices, read back by Gather; sfdisk --json is the
// oracle for the partition geometry.
func TestHostGatherLoopDevices(t *testing.T) {
	testtier.Host(t, "losetup", "sfdisk", "cryptsetup", "lvm")
	dir := t.TempDir()
	gptImg := filepath.Join(dir, "gpt.img")
	os.WriteFile(gptImg, nil, 0o600)
	os.Truncate(gptImg, 64<<20)
	sf := exec.Command("sfdisk", "-q", gptImg)
	sf.Stdin = strings.NewReader("label: gpt\nsize=16MiB, type=linux, name=one\nsize=32MiB, type=lvm, name=two\n")
	if out, err := sf.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v %s", err, out)
	}
	js, err := exec.Command("sfdisk", "--json", gptImg).Output()
	if err != nil {
		t.Fatal(err)
	}
	var want struct {
		PartitionTable struct {
			Partitions []struct {
				Start int64 `json:"start"`
				Size  int64 `json:"size"`
				Name  string
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	json.Unmarshal(js, &want)

	luksImg := filepath.Join(dir, "luks.img")
	os.WriteFile(luksImg, nil, 0o600)
	os.Truncate(luksImg, 32<<20)
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte("gather-test"), 0o600)
	if out, err := exec.Command("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
		"--pbkdf-force-iterations", "1000", "--label", "vmail", "--key-file", pass, luksImg).CombinedOutput(); err != nil {
		t.Fatalf("luksFormat: %v %s", err, out)
	}
	gptDev, luksDev := losetup(t, gptImg), losetup(t, luksImg)

	inv, err := Gather(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The TPM is recorded either way; ls /sys/class/tpm is the oracle.
	tpms, _ := filepath.Glob("/sys/class/tpm/tpm[0-9]*")
	if inv.TPM2 == nil || *inv.TPM2 != (len(tpms) > 0) {
		t.Errorf("inventory tpm2 = %v, but /sys/class/tpm lists %q", inv.TPM2, tpms)
	}
	g := inv.Device(gptDev)
	if g == nil || g.Kind != KindLoop || g.Size != 64<<20 || g.Table == nil || g.Table.Type != "gpt" {
		t.Fatalf("got %+v", g)
	}
	if len(g.Table.Partitions) != len(want.PartitionTable.Partitions) {
		t.Fatalf("got %d partitions, sfdisk says %d", len(g.Table.Partitions), len(want.PartitionTable.Partitions))
	}
	for i, p := range g.Table.Partitions {
		w := want.PartitionTable.Partitions[i]
		if p.Start != w.Start*512 || p.Size != w.Size*512 || p.Name != w.Name {
			t.Errorf("partition %d: got start %d size %d name %q; sfdisk: start %d size %d name %q", i+1, p.Start, p.Size, p.Name, w.Start*512, w.Size*512, w.Name)
		}
	}
	l := inv.Device(luksDev)
	if l == nil || l.Content == nil || l.Content.Type != "crypto_LUKS" || l.Content.LUKS == nil || l.Content.Label != "vmail" || len(l.Content.LUKS.Keyslots) != 1 {
		t.Fatalf("got %+v", l)
	}
	b, _ := inv.Marshal()
	if strings.Contains(string(b), "gather-test") {
		t.Fatal("the inventory contains the passphrase")
	}
}
