package packaging

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/harness/libvirttest"
	"github.com/cryptshift/cryptshift/internal/harness/testtier"
	"github.com/cryptshift/cryptshift/libvirt"
)

// play is one ansible-playbook run against playbooks/inventory-ci.
type play struct {
	code   int
	stats  map[string]hostStats
	output string   // everything ansible-playbook printed
	failed []string // "host: task: why" for each failed task
	took   time.Duration
}

// callbackDoc is the part of the json stdout callback's document the
// test reads.
type callbackDoc struct {
	Stats map[string]hostStats `json:"stats"`
	Plays []struct {
		Tasks []struct {
			Task struct {
				Name string `json:"name"`
			} `json:"task"`
			Hosts map[string]taskResult `json:"hosts"`
		} `json:"tasks"`
	} `json:"plays"`
}

type taskResult struct {
	Failed  bool         `json:"failed"`
	Msg     string       `json:"msg"`
	Stderr  string       `json:"stderr"`
	Results []taskResult `json:"results"`
}

// failures says, for each failed task, which host failed and why.
func (d callbackDoc) failures() []string {
	var out []string
	for _, pl := range d.Plays {
		for _, tk := range pl.Tasks {
			for h, r := range tk.Hosts {
				if !r.Failed {
					continue
				}
				why := r.Msg + " " + r.Stderr
				for _, it := range r.Results {
					if it.Failed {
						why += " | " + it.Msg + " " + it.Stderr
					}
				}
				out = append(out, h+": "+tk.Task.Name+": "+strings.TrimSpace(why))
			}
		}
	}
	return out
}

type hostStats struct {
	OK       int `json:"ok"`
	Changed  int `json:"changed"`
	Failures int `json:"failures"`
	Skipped  int `json:"skipped"`
}

// fleet runs the playbooks of one test.
type fleet struct {
	repo string
	dir  string // cryptshift_ci_dir: state and fetched results
	tmp  string // Ansible's own temporary files
}

// env keeps Ansible's files (~/.ansible, ansible-lint's cache in ~/.cache)
// in the test's directory.
func (f *fleet) env() []string {
	return append(os.Environ(), "HOME="+f.tmp, "XDG_CACHE_HOME="+f.tmp, "ANSIBLE_HOME="+f.tmp,
		"ANSIBLE_LOCAL_TEMP="+f.tmp, "ANSIBLE_REMOTE_TEMP="+f.tmp, "ANSIBLE_NOCOLOR=1",
		"ANSIBLE_RETRY_FILES_ENABLED=0", "PATH=/usr/sbin:/usr/bin:/sbin:/bin")
}

// run runs ansible-playbook with the named playbooks (a space-separated
// list, run in one go) and args.
func (f *fleet) run(t *testing.T, playbooks string, args ...string) play {
	t.Helper()
	argv := []string{"-i", "playbooks/inventory-ci/hosts.yml", "-e", "cryptshift_ci_dir=" + f.dir}
	for _, pb := range strings.Fields(playbooks) {
		argv = append(argv, "playbooks/"+pb)
	}
	argv = append(argv, args...)
	cmd := exec.Command("ansible-playbook", argv...)
	cmd.Dir = f.repo
	// The json callback gives per-host statistics to assert on; Ansible's
	// temporary files go to the test's directory, not ~/.ansible.
	cmd.Env = append(f.env(), "ANSIBLE_STDOUT_CALLBACK=json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	p := play{output: stdout.String() + stderr.String(), took: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		p.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("cannot run ansible-playbook: %v", err)
	}
	// The json callback prints one document per playbook.
	p.stats = map[string]hostStats{}
	dec := json.NewDecoder(&stdout)
	for dec.More() {
		var doc callbackDoc
		if err := dec.Decode(&doc); err != nil {
			t.Fatalf("ansible-playbook %s %v: exit %d, output is not the json callback's: %v\n%.4000s", playbooks, args, p.code, err, p.output)
		}
		for h, st := range doc.Stats {
			sum := p.stats[h]
			sum.OK += st.OK
			sum.Changed += st.Changed
			sum.Failures += st.Failures
			sum.Skipped += st.Skipped
			p.stats[h] = sum
		}
		p.failed = append(p.failed, doc.failures()...)
	}
	t.Logf("ansible-playbook %s %s: exit %d in %s", playbooks, strings.Join(args, " "), p.code, p.took.Round(time.Millisecond))
	return p
}

// expect checks the exit status and each listed host's counters; -1 skips
// a counter.
func (p play) expect(t *testing.T, what string, code int, hosts map[string]hostStats) {
	t.Helper()
	bad := p.code != code
	for h, want := range hosts {
		got, ok := p.stats[h]
		if !ok || (want.Changed >= 0 && got.Changed != want.Changed) || (want.Failures >= 0 && got.Failures != want.Failures) {
			bad = true
			t.Errorf("%s: host %s: got %+v (present %v), want changed=%d failures=%d", what, h, got, ok, want.Changed, want.Failures)
		}
	}
	if p.code != code {
		t.Errorf("%s: exit %d, want %d", what, p.code, code)
	}
	if bad {
		t.Fatalf("%s: failed tasks:\n%s", what, strings.Join(p.failed, "\n"))
	}
}

func (f *fleet) result(t *testing.T, host, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, "results", host, name))
	if err != nil {
		t.Fatalf("the controller did not receive %s from %s: %v", name, host, err)
	}
	return b
}

func verdict(t *testing.T, report []byte) string {
	t.Helper()
	var r struct {
		Summary struct{ Verdict string } `json:"summary"`
	}
	if err := json.Unmarshal(report, &r); err != nil {
		t.Fatalf("fetched verify.json is not JSON: %v", err)
	}
	return r.Summary.Verdict
}

// TestHostPlaybooks runs the fleet playbooks for real against this machine
// (connection local), with the inventory in playbooks/inventory-ci: six
// "hosts" that are this machine with their own state directories.
//
//   - lint: ansible-playbook --syntax-check and ansible-lint's production
//     profile on the playbooks, the role and the CI inventory;
//   - install.yml installs the .deb this test builds, with apt from the
//     controller's copy, runs doctor and fetches its report; a second run
//     changes nothing; at the end cryptshift_state=absent purges it;
//   - plan.yml plans an example layout and a layout file against saved
//     inventories; the fetched plans equal cryptshift plan's own output;
//   - verify.yml verifies captured trees (testdata/verify): two PASS, one
//     FAIL; the FAIL host fails the run, every host's JSON, Markdown and HTML
//     reports reach the controller byte for byte; reruns and --check change
//     nothing;
//   - migrate.yml against a private libvirtd: a pre-check failure on one
//     host stops the run before any guest moves; --check only pre-checks;
//     a failure during the real migration of the second host stops the
//     run, the first host's guest is migrated and the third's untouched;
//     a rerun changes nothing.
func TestHostPlaybooks(t *testing.T) {
	testtier.Host(t, append([]string{"go", "dpkg", "ansible-playbook", "ansible-lint"}, libvirttest.Programs...)...)
	needPackageSlot(t)
	repo, _ := filepath.Abs("..")
	f := &fleet{repo: repo, dir: t.TempDir(), tmp: t.TempDir()}
	start := time.Now()

	t.Run("lint", func(t *testing.T) {
		pbs := []string{"playbooks/install.yml", "playbooks/plan.yml", "playbooks/verify.yml", "playbooks/migrate.yml"}
		cmd := exec.Command("ansible-playbook", append([]string{"--syntax-check", "-i", "playbooks/inventory-ci/hosts.yml"}, pbs...)...)
		cmd.Dir = repo
		cmd.Env = f.env()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("ansible-playbook --syntax-check: %v\n%s", err, out)
		}
		lint := []string{"--profile", "production", "--nocolor", "install.yml", "plan.yml", "verify.yml", "migrate.yml", "roles/cryptshift"}
		inv, _ := filepath.Glob(filepath.Join(repo, "playbooks/inventory-ci/*/*.yml"))
		for _, p := range append(inv, filepath.Join(repo, "playbooks/inventory-ci/hosts.yml")) {
			rel, _ := filepath.Rel(filepath.Join(repo, "playbooks"), p)
			lint = append(lint, rel)
		}
		cmd = exec.Command("ansible-lint", lint...)
		cmd.Dir = filepath.Join(repo, "playbooks")
		cmd.Env = f.env()
		// Warnings do not change ansible-lint's exit status; clean means
		// none either.
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "Passed with production profile: 0 failure(s), 0 warning(s)") {
			t.Errorf("ansible-lint --profile production: %v\n%s", err, out)
		}
	})

	dir, a := buildRelease(t)
	deb := filepath.Join(dir, a.Debs[0])
	purgeOnCleanup(t)

	// Every ansible-playbook run costs seconds here, so the runs are few:
	// install; plan and verify together; the same again in check mode,
	// which proves that a real rerun would change nothing (modules report
	// in check mode what they would change); install again with a
	// requirement this machine cannot meet.
	t.Run("install", func(t *testing.T) {
		p := f.run(t, "install.yml", "-l", "clean", "-e", "cryptshift_deb="+deb)
		// Changed: the cache directory, the copy, the package, the state
		// directory, the stored and the fetched doctor report.
		p.expect(t, "install", 0, map[string]hostStats{"clean": {Changed: 6, Failures: 0}})
		if v := installedVersion(); v != "0.9.0+3.g1234abc" {
			t.Fatalf("after install.yml dpkg says %q is installed", v)
		}
		var doc struct {
			Schema       string `json:"schema"`
			Capabilities []struct {
				Name  string `json:"name"`
				Ready bool   `json:"ready"`
			} `json:"capabilities"`
		}
		if err := json.Unmarshal(f.result(t, "clean", "doctor.json"), &doc); err != nil || doc.Schema != "cryptshift.doctor/v1" || len(doc.Capabilities) == 0 {
			t.Errorf("fetched doctor.json: %v, %+v", err, doc)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("plan and verify", func(t *testing.T) {
		p := f.run(t, "plan.yml verify.yml", "-l", "fixtures")
		// leaky has no layout (plan ends it there) and FAILs verify:
		// the run fails, the others do not.
		p.expect(t, "plan and verify", 2, map[string]hostStats{"clean": {Changed: -1, Failures: 0}, "vps": {Changed: -1, Failures: 0}, "leaky": {Changed: -1, Failures: 1}})
		if !strings.Contains(strings.Join(p.failed, "\n"), "leaky: verify says FAIL (2 failed, 1 warning): storage.mount, tmp.tmp.") {
			t.Errorf("the FAIL host's message does not name the failed check:\n%s", strings.Join(p.failed, "\n"))
		}

		// Plans: what cryptshift plan prints, for the example and for a
		// layout file with a saved inventory and a device mapping.
		for host, args := range map[string][]string{
			"clean": {"plan", "--example", "mail-host"},
			"vps": {"plan", "-f", filepath.Join(f.dir, "vps/state/layout.yaml"), "--inventory", filepath.Join(f.dir, "vps/state/inventory.json"),
				"--device=disk0=/dev/vda"},
		} {
			for ext, format := range map[string]string{"json": "json", "txt": "table", "sh": "script"} {
				want, err := exec.Command("/usr/bin/cryptshift", append(args, "-o", format, "--target", "/target")...).Output()
				if err != nil {
					t.Fatalf("cryptshift %v -o %s: %v", args, format, err)
				}
				// Ansible strips trailing newlines from a command's
				// output and the role adds one back: the script's final
				// blank line is the one difference it may show.
				want = append(bytes.TrimRight(want, "\n"), '\n')
				if got := f.result(t, host, "plan."+ext); !bytes.Equal(got, want) {
					t.Errorf("%s: fetched plan.%s differs from cryptshift %s -o %s", host, ext, strings.Join(args, " "), format)
				}
			}
		}
		if _, err := os.Stat(filepath.Join(f.dir, "results/leaky/plan.json")); err == nil {
			t.Errorf("leaky has no layout but got a plan")
		}

		// Reports: every host's, with its verdict, byte for byte what
		// cryptshift verify writes (no re-encoding on the way: Ansible
		// would re-serialise JSON given the chance).
		for host, want := range map[string]string{"clean": "PASS", "vps": "PASS", "leaky": "FAIL"} {
			if v := verdict(t, f.result(t, host, "verify.json")); v != want {
				t.Errorf("%s: fetched verdict %s, want %s", host, v, want)
			}
		}
		root := filepath.Join(repo, "testdata/verify/mailhost-luks-on-lvm/root")
		for ext, format := range map[string]string{"json": "json", "md": "markdown", "html": "html"} {
			want, _ := exec.Command("/usr/bin/cryptshift", "verify", "--root", root, "-o", format, "--lang", "de", "--date", "2026-11-22").Output()
			if got := f.result(t, "clean", "verify."+ext); len(want) == 0 || !bytes.Equal(got, want) {
				t.Errorf("clean: fetched verify.%s (%d bytes) differs from cryptshift verify -o %s (%d bytes)", ext, len(got), format, len(want))
			}
		}
		if md := string(f.result(t, "leaky", "verify.md")); !strings.Contains(md, "tmp.tmp") || !strings.Contains(md, "FAIL") {
			t.Errorf("leaky's Markdown report does not show the FAIL:\n%.2000s", md)
		}
		if html := string(f.result(t, "vps", "verify.html")); !strings.Contains(html, "<html") || !strings.Contains(html, "PASS") {
			t.Errorf("vps's HTML report is not an HTML report with its verdict:\n%.2000s", html)
		}

		p = f.run(t, "plan.yml verify.yml", "-l", "fixtures", "--check")
		p.expect(t, "plan and verify --check", 2, map[string]hostStats{"clean": {Changed: 0}, "vps": {Changed: 0}, "leaky": {Changed: 0, Failures: 1}})
	})

	t.Run("install again, requiring apply", func(t *testing.T) {
		// Nothing to change; but a host that must be able to apply
		// cannot be on these machines (no device-mapper): the requirement
		// fails the host and names why.
		p := f.run(t, "install.yml", "-l", "clean", "-e", "cryptshift_deb="+deb, "-e", `{"cryptshift_doctor_require": ["plan", "apply"]}`)
		p.expect(t, "install requiring apply", 2, map[string]hostStats{"clean": {Changed: 0, Failures: 1}})
		if !strings.Contains(strings.Join(p.failed, "\n"), "clean is not ready for apply: kernel.device-mapper:") {
			t.Errorf("the failed requirement does not say what is missing:\n%s", strings.Join(p.failed, "\n"))
		}
	})

	t.Run("migrate", func(t *testing.T) {
		d := libvirttest.Start(t)
		c := d.Dial(t)
		guests := t.TempDir()
		d.DefineDirPool(t, "ci-enc", filepath.Join(guests, "pool"))
		disk := func(name string) string {
			p := filepath.Join(guests, name+".raw")
			if err := os.WriteFile(p, bytes.Repeat([]byte(name+" mail data "), 1<<16), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(p, 16<<20); err != nil {
				t.Fatal(err)
			}
			return p
		}
		define := func(name string) {
			d.Define(t, libvirttest.Domain(name, libvirttest.FileDisk("vda", disk(name), "raw")), false)
		}
		source := func(name string) string {
			dom, err := c.DomainXML(name, libvirt.XMLFlags{Inactive: true})
			if err != nil {
				t.Fatal(err)
			}
			x := libvirt.FindDisk(dom, "vda")
			if x.Source.Encryption != nil {
				return libvirt.SourcePath(x) + " (encrypted)"
			}
			return libvirt.SourcePath(x)
		}
		journal := func(host, guest string) bool {
			_, err := os.Stat(filepath.Join(f.dir, host, "journals", guest+".journal"))
			return err == nil
		}
		plain := map[string]string{}
		for _, g := range []string{"ci-a", "ci-c"} {
			define(g)
			plain[g] = source(g)
		}
		connect := "cryptshift_connect=" + d.Socket

		// kvm2's guest does not exist yet: the pre-check fails there, and
		// no host migrates anything.
		p := f.run(t, "migrate.yml", "-l", "kvm", "-e", connect)
		p.expect(t, "migrate with a missing guest", 2, map[string]hostStats{"kvm1": {Changed: -1, Failures: 0}, "kvm2": {Changed: -1, Failures: 1}})
		if why := strings.Join(p.failed, "\n"); !strings.Contains(why, "kvm2: cryptshift : Dry-run each new guest's migration:") ||
			!strings.Contains(why, `cannot find domain "ci-b"`) {
			t.Errorf("the pre-check failure does not name guest ci-b:\n%s", strings.Join(p.failed, "\n"))
		}
		for _, g := range []string{"ci-a", "ci-c"} {
			if s := source(g); s != plain[g] {
				t.Errorf("%s moved to %s although a pre-check failed", g, s)
			}
		}
		if journal("kvm1", "ci-a") || journal("kvm3", "ci-c") {
			t.Errorf("a journal was started although a pre-check failed")
		}

		define("ci-b")
		plain["ci-b"] = source("ci-b")
		p = f.run(t, "migrate.yml", "-l", "kvm", "-e", connect, "--check")
		p.expect(t, "migrate --check", 0, map[string]hostStats{"kvm1": {Failures: 0, Changed: -1}, "kvm2": {Failures: 0, Changed: -1}, "kvm3": {Failures: 0, Changed: -1}})
		for g := range plain {
			if s := source(g); s != plain[g] {
				t.Errorf("--check moved %s to %s", g, s)
			}
		}
		if _, err := os.Stat(filepath.Join(f.dir, "results/kvm3/migrate-ci-c.plan.json")); err == nil {
			t.Errorf("--check wrote a dry-run plan to the controller")
		}

		// kvm2's journal directory cannot be created (nothing can be
		// made in /proc), which only the real migration finds out: it
		// fails after kvm1's succeeded, and kvm3 is never reached.
		p = f.run(t, "migrate.yml", "-l", "kvm", "-e", connect, "-e", "cryptshift_ci_kvm2_journal_dir=/proc/cryptshift-ci/journals")
		p.expect(t, "migrate with a failure on kvm2", 2, map[string]hostStats{"kvm1": {Changed: -1, Failures: 0}, "kvm2": {Changed: -1, Failures: 1}})
		if why := strings.Join(p.failed, "\n"); !strings.Contains(why, "kvm2: cryptshift : Migrate the guest (ci-b): non-zero return code cryptshift: cannot create /proc/cryptshift-ci/journals") {
			t.Errorf("kvm2's failure is not the one the test arranged:\n%s", why)
		}
		if s, want := source("ci-a"), filepath.Join(guests, "pool", "ci-a-vda.luks")+" (encrypted)"; s != want {
			t.Errorf("ci-a on kvm1: disk %s, want %s", s, want)
		}
		if s := source("ci-b"); s != plain["ci-b"] {
			t.Errorf("ci-b on the failing kvm2 moved to %s", s)
		}
		if s := source("ci-c"); s != plain["ci-c"] || journal("kvm3", "ci-c") {
			t.Errorf("ci-c on kvm3, after the failure, moved to %s (journal: %v)", s, journal("kvm3", "ci-c"))
		}
		// The pre-checks passed everywhere, so every dry-run plan was
		// fetched for review.
		for g, h := range map[string]string{"ci-a": "kvm1", "ci-b": "kvm2", "ci-c": "kvm3"} {
			var plan struct {
				Domain string `json:"domain"`
				To     string `json:"to"`
			}
			if err := json.Unmarshal(f.result(t, h, "migrate-"+g+".plan.json"), &plan); err != nil || plan.Domain != g || plan.To != "pool:ci-enc" {
				t.Errorf("%s: fetched dry-run plan of %s: %v %+v", h, g, err, plan)
			}
		}

		// Idempotent: ci-a's journal says done; resuming changes nothing.
		p = f.run(t, "migrate.yml", "-l", "kvm1", "-e", connect)
		p.expect(t, "migrate kvm1 again", 0, map[string]hostStats{"kvm1": {Changed: 0, Failures: 0}})
		if s := source("ci-a"); !strings.HasSuffix(s, "(encrypted)") {
			t.Errorf("ci-a after the rerun: %s", s)
		}
	})

	t.Run("uninstall", func(t *testing.T) {
		p := f.run(t, "install.yml", "-l", "clean", "-e", "cryptshift_state=absent")
		p.expect(t, "uninstall", 0, map[string]hostStats{"clean": {Changed: 1, Failures: 0}})
		if v := installedVersion(); v != "" {
			t.Errorf("cryptshift %s is still installed after cryptshift_state=absent", v)
		}
	})
	t.Logf("playbook tests took %s", time.Since(start).Round(time.Second))
}
