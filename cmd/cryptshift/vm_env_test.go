// The VM tier, apply: the environment every scenario starts from (the
// mail-host example on fresh loop devices) and the helpers that drive the
// binary, read its journal and compare inventories.

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/harness/secretscan"
	"github.com/cryptshift/cryptshift/internal/harness/vmtest"
	"github.com/cryptshift/cryptshift/internal/model/inventory"
	"github.com/cryptshift/cryptshift/internal/model/plan"
)

// The VM tier: real dm-crypt, LVM and loop devices inside a throwaway VM.

const vmPassphrase = "vm test passphrase: not a real one"

// vmEnv is one prepared run of the mail-host example on two fresh loop
// devices: its layout (the shipped example with a PBKDF cost that TCG
// emulation can afford), devices, target root, journal and secrets.
type vmEnv struct {
	t        *testing.T
	dir      string
	layout   string
	disks    []string
	root     string
	journal  string
	passFile string
	rkFile   string
}

// partscanLoops attaches loop devices with partition scanning (the GPT on
// disk0 needs its partitions as /dev/loopNpM), torn down by vmtest.
func partscanLoops(t *testing.T, sizes ...int64) []string {
	t.Helper()
	var devs []string
	for i, size := range sizes {
		f := filepath.Join(t.TempDir(), fmt.Sprintf("disk%d.img", i))
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		os.Truncate(f, size)
		out, err := exec.Command("losetup", "--partscan", "--find", "--show", f).Output()
		if err != nil {
			t.Fatalf("losetup: %v", err)
		}
		dev := strings.TrimSpace(string(out))
		devs = append(devs, dev)
		t.Cleanup(func() {
			if err := vmtest.TeardownDevice(dev); err != nil {
				t.Errorf("teardown %s: %v", dev, err)
			}
			exec.Command("losetup", "--detach", dev).Run()
		})
	}
	return devs
}

func newVMEnv(t *testing.T) *vmEnv {
	t.Helper()
	ex, err := os.ReadFile("../../playbooks/examples/mail-host.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Same layout; only the PBKDF cost is forced low (argon2id, 4 passes
	// over 1 MiB): under TCG emulation one argon2id pass over 32 MiB
	// already takes seconds, and apply unlocks each volume several times.
	y := strings.Replace(string(ex), "luks:\n", "luks:\n  iterations: 4\n  memoryKiB: 1024\n  parallel: 1\n", 1)
	if y == string(ex) {
		t.Fatal("the example has no luks: section to adjust")
	}
	dir := t.TempDir()
	e := &vmEnv{t: t, dir: dir, layout: filepath.Join(dir, "mail-host.yaml"), root: filepath.Join(dir, "target"),
		journal: filepath.Join(dir, "apply.journal"), passFile: filepath.Join(dir, "pass"), rkFile: filepath.Join(dir, "recovery.key")}
	os.WriteFile(e.layout, []byte(y), 0o644)
	os.WriteFile(e.passFile, []byte(vmPassphrase+"\n"), 0o600)
	e.disks = partscanLoops(t, 2<<30, 1<<30)
	t.Cleanup(func() { exec.Command("umount", "-R", e.root).Run() })
	return e
}

func (e *vmEnv) common() []string {
	return []string{"--root", e.root, "--device", "disk0=" + e.disks[0], "--device", "disk1=" + e.disks[1]}
}

func (e *vmEnv) applyArgs() []string {
	return append([]string{"-v", "apply", "-f", e.layout, "--yes", "--passphrase-file", e.passFile,
		"--recovery-key-file", e.rkFile, "--journal", e.journal}, e.common()...)
}

func (e *vmEnv) resumeArgs() []string {
	return []string{"-v", "apply", "--resume", "--journal", e.journal, "--passphrase-file", e.passFile, "--recovery-key-file", e.rkFile}
}

func (e *vmEnv) planJSON() *plan.Plan {
	e.t.Helper()
	r := run(e.t, append([]string{"plan", "-f", e.layout, "-o", "json"}, e.common()...)...)
	if r.code != 0 {
		e.t.Fatalf("plan: exit %d: %s", r.code, r.stderr)
	}
	p, err := plan.Parse("plan", []byte(r.stdout))
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

func containsSecret(hay []byte, secret []byte) bool { return secretscan.Find(hay, secret) != "" }

// inventory is the loop devices' state as "cryptshift inventory" reports
// it, without what is random by design (LVM's own UUIDs, the UUID mkswap
// gives a random-key swap at every boot).
func (e *vmEnv) inventory() string {
	e.t.Helper()
	r := run(e.t, "inventory", "-o", "json", "--target", e.root)
	if r.code != 0 {
		e.t.Fatalf("inventory: exit %d %s", r.code, r.stderr)
	}
	inv, err := inventory.Parse("inventory", []byte(r.stdout))
	if err != nil {
		e.t.Fatal(err)
	}
	ours := map[string]bool{}
	for _, d := range e.disks {
		ours[d] = true
	}
	var devs []inventory.Device
	for changed := true; changed; {
		changed = false
		for _, d := range inv.Devices {
			if !ours[d.Path] && ours[d.Parent] {
				ours[d.Path], changed = true, true
			}
		}
	}
	for _, d := range inv.Devices {
		if !ours[d.Path] {
			continue
		}
		if d.Content != nil && (d.Content.Type == "LVM2_member" || d.DMName == "swap_crypt") {
			d.Content.UUID = ""
		}
		if strings.HasPrefix(d.DMUUID, "LVM-") {
			d.DMUUID = "LVM-(random VG and LV UUIDs)"
		}
		devs = append(devs, d)
	}
	inv.Devices = devs
	var mounts []inventory.Mount
	for _, m := range inv.Mounts {
		if ours[m.Source] {
			m.Options = ""
			mounts = append(mounts, m)
		}
	}
	inv.Mounts = mounts
	for i := range inv.PVs {
		inv.PVs[i].UUID = ""
	}
	for i := range inv.VGs {
		inv.VGs[i].UUID = ""
	}
	for i := range inv.LVs {
		inv.LVs[i].UUID = ""
	}
	inv.Host = ""
	b, _ := json.MarshalIndent(inv, "", " ")
	return string(b)
}

// rollback rolls the apply in the journal back (with extra flags, e.g.
// --allow-destroy --yes for a finished one) and checks the loop devices
// are as they were before the apply.
func (e *vmEnv) rollback(blank, when string, flags ...string) {
	e.t.Helper()
	r := run(e.t, append([]string{"rollback", "--journal", e.journal}, flags...)...)
	if r.code != 0 {
		e.t.Fatalf("rollback %s: exit %d\n%s", when, r.code, r.stderr)
	}
	if got := e.inventory(); got != blank {
		// Rollback removes every signature and header (without the LUKS
		// header the ciphertext is unreadable for good) but does not scrub
		// the body: the probe honestly reports what is left as data with
		// no recognised signature. Anything more is a rollback defect.
		if bad := signaturesLeft(e.t, got); len(bad) > 0 {
			e.t.Fatalf("rollback %s left signatures on the loop devices: %s\n%s", when, strings.Join(bad, "; "), diffLines(blank, got))
		}
		discardDisks(e.t, e.disks...)
		if got := e.inventory(); got != blank {
			e.t.Fatalf("rollback %s did not leave the loop devices as they were:\n%s", when, diffLines(blank, got))
		}
	}
	os.Remove(e.rkFile)
}

// signaturesLeft lists what in an inventory (as e.inventory prints it) is
// more than the anonymous residue a rollback leaves: a partition table, a
// partition, a holder device, or content with a recognised signature.
func signaturesLeft(t *testing.T, invJSON string) []string {
	t.Helper()
	inv, err := inventory.Parse("inventory", []byte(invJSON))
	if err != nil {
		t.Fatal(err)
	}
	var bad []string
	for _, d := range inv.Devices {
		switch {
		case d.Parent != "":
			bad = append(bad, d.Path+" still exists on "+d.Parent)
		case d.Table != nil:
			bad = append(bad, d.Path+" has a "+d.Table.Type+" partition table")
		case d.Content != nil && d.Content.Type != "unknown":
			bad = append(bad, d.Path+" holds "+d.Content.Type)
		}
	}
	if len(inv.PVs)+len(inv.VGs)+len(inv.LVs)+len(inv.Mounts) > 0 {
		bad = append(bad, "LVM objects or mounts remain")
	}
	return bad
}

// discardDisks discards every block of the test disks (loop devices punch
// holes in their backing files), so the next phase starts from blank disks
// again: a test-only reset, after the rollback's own result was checked.
func discardDisks(t *testing.T, devs ...string) {
	t.Helper()
	for _, d := range devs {
		if out, err := exec.Command("blkdiscard", d).CombinedOutput(); err != nil {
			t.Fatalf("blkdiscard %s: %v %s", d, err, out)
		}
	}
}

// killDuring starts apply and kill -9s it while the step with the given
// id runs (its start is journalled and its end is not).
func (e *vmEnv) killDuring(args []string, stepID string) {
	e.t.Helper()
	cmd := exec.Command(binary, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Minute)
	for lastJournalRecord(e.t, e.journal) != "start "+stepID {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			e.t.Fatalf("step %s never started:\n%s", stepID, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(150 * time.Millisecond)
	cmd.Process.Kill() // SIGKILL
	cmd.Wait()
	if last := lastJournalRecord(e.t, e.journal); last != "start "+stepID {
		e.t.Fatalf("the kill came too late: the journal ends with %q", last)
	}
}

// reboot stands in for a reboot between a crash and a resume: swap off,
// everything under the target root unmounted, every dm-crypt mapping
// closed (LVM volumes stay active, as udev activates them at boot).
func reboot(t *testing.T, e *vmEnv) {
	t.Helper()
	exec.Command("swapoff", "-a").Run()
	exec.Command("umount", "-R", e.root).Run()
	out, _ := exec.Command("dmsetup", "ls", "--target", "crypt").Output()
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] != "No" {
			if out, err := exec.Command("cryptsetup", "close", f[0]).CombinedOutput(); err != nil {
				t.Fatalf("close %s: %v %s", f[0], err, out)
			}
		}
	}
	// Boot activates volume groups only when something asks for them
	// (an initramfs that unlocks only the root, a rescue system): the
	// layout's VG is left inactive, so its LVs have no device nodes.
	if out, err := exec.Command("vgchange", "--activate", "n", vmVG).CombinedOutput(); err != nil {
		t.Fatalf("vgchange -an %s: %v %s", vmVG, err, out)
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), " "+e.root) {
		t.Fatalf("%s is still mounted", e.root)
	}
}

// vmVG is the volume group of the layout the VM tests apply (mail-host).
const vmVG = "vg0"

// activateVG activates the layout's VG again, as a boot that asks for it does.
func activateVG(t *testing.T) {
	t.Helper()
	if out, err := exec.Command("vgchange", "--activate", "y", vmVG).CombinedOutput(); err != nil {
		t.Fatalf("vgchange -ay %s: %v %s", vmVG, err, out)
	}
}

func lastJournalRecord(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var rec struct {
		Type string `json:"type"`
		Data struct {
			Step string `json:"step"`
		} `json:"data"`
	}
	if json.Unmarshal([]byte(lines[len(lines)-1]), &rec) != nil {
		return ""
	}
	return strings.TrimSpace(rec.Type + " " + rec.Data.Step)
}

// longestStep reads --progress json events and names the slowest step.
func longestStep(t *testing.T, events string) string {
	best, bestS := "", -1.0
	for _, l := range strings.Split(events, "\n") {
		var ev struct {
			Event   string   `json:"event"`
			Task    string   `json:"task"`
			Elapsed *float64 `json:"elapsed_seconds"`
		}
		if json.Unmarshal([]byte(l), &ev) == nil && ev.Event == "done" && ev.Elapsed != nil && *ev.Elapsed > bestS {
			best, bestS = ev.Task, *ev.Elapsed
		}
	}
	if best == "" {
		t.Fatalf("no step timings in the progress events:\n%s", events)
	}
	t.Logf("longest step: %s (%.1fs)", best, bestS)
	return best
}

func diffLines(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for i := 0; i < max(len(al), len(bl)); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			out = append(out, fmt.Sprintf("line %d:\n  want %s\n  got  %s", i+1, x, y))
			if len(out) > 8 {
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
