package packaging

import (
	"bytes"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/harness/testtier"
)

// testVersion is what the test package calls itself: a tagged release three
// commits on, so the Debian version (0.9.0+3.g1234abc) goes through the
// conversion a real release does.
const (
	testVersion = "v0.9.0-3-g1234abc"
	testCommit  = "1234abc0000000000000000000000000000000000"
)

var (
	debOnce sync.Once
	debDir  string // holds the test's release build; removed by TestMain
	debArts *Artifacts
	debErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if debDir != "" {
		os.RemoveAll(debDir)
	}
	os.Exit(code)
}

// buildRelease builds the release for this machine's architecture once per
// test binary: TestHostDebInstall and TestHostPlaybooks install the same
// package.
func buildRelease(t *testing.T) (dir string, a *Artifacts) {
	t.Helper()
	debOnce.Do(func() {
		debDir, debErr = os.MkdirTemp("", "cryptshift-deb-test-")
		if debErr != nil {
			return
		}
		repo, _ := filepath.Abs("..")
		b := Build{Repo: repo, Version: testVersion, Commit: testCommit,
			Date: time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC), Out: debDir,
			Arches: []string{runtime.GOARCH}, Maintainer: DefaultMaintainer}
		start := time.Now()
		debArts, debErr = b.All(context.Background())
		t.Logf("built the release in %s", time.Since(start).Round(time.Millisecond))
	})
	if debErr != nil {
		t.Fatal(debErr)
	}
	return debDir, debArts
}

// needPackageSlot fails or skips (testtier.Unavailable) unless the test may
// install and purge the cryptshift package on this machine: it needs root,
// and never replaces a cryptshift the admin installed.
func needPackageSlot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testtier.Unavailable(t, "installing a .deb needs root")
	}
	if installedVersion() != "" {
		testtier.Unavailable(t, "a cryptshift package ("+installedVersion()+") is installed on this machine; the test would replace it (dpkg --purge cryptshift first)")
	}
}

func installedVersion() string {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Status} ${Version}", "cryptshift").Output()
	if err != nil || !strings.HasPrefix(string(out), "install ok installed") {
		return ""
	}
	return strings.TrimPrefix(string(out), "install ok installed ")
}

// purgeOnCleanup removes the package however the test ends, and checks
// that nothing of it is left.
func purgeOnCleanup(t *testing.T) {
	t.Cleanup(func() {
		if installedVersion() == "" {
			return
		}
		if out, err := exec.Command("dpkg", "--purge", "cryptshift").CombinedOutput(); err != nil {
			t.Errorf("cannot purge the test package: %v: %s", err, out)
		}
		for _, p := range []string{DestBinary, DestBash, DestMan + "/cryptshift.1.gz", DestPlaybooks} {
			if _, err := os.Stat(p); err == nil {
				t.Errorf("%s is left after dpkg --purge", p)
			}
		}
	})
}

type cmdResult struct {
	out  string
	code int
}

func sh(t *testing.T, env []string, name string, args ...string) cmdResult {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	r := cmdResult{out: b.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("cannot run %s: %v", name, err)
	}
	return r
}

// TestHostDebInstall builds the release for this machine, checks the static
// binary and the checksums, installs the .deb with dpkg -i, and checks what
// a Debian admin would touch: cryptshift --version and doctor from PATH,
// man cryptshift and man cryptshift-doctor, bash completion through
// bash-completion's loader, the zsh and fish files; then purges it.
func TestHostDebInstall(t *testing.T) {
	testtier.Host(t, "go", "dpkg", "dpkg-deb", "dpkg-query", "man", "bash", "sha256sum")
	if _, err := os.Stat("/usr/share/bash-completion/bash_completion"); err != nil {
		testtier.Unavailable(t, "bash-completion is not installed (make deps)")
	}
	needPackageSlot(t)
	dir, a := buildRelease(t)
	if len(a.Debs) != 1 || len(a.Binaries) != 1 {
		t.Fatalf("built %v and %v, want one .deb and one binary", a.Debs, a.Binaries)
	}
	deb := filepath.Join(dir, a.Debs[0])
	if want := "cryptshift_0.9.0+3.g1234abc_" + runtime.GOARCH + ".deb"; a.Debs[0] != want {
		t.Errorf("package file %s, want %s", a.Debs[0], want)
	}

	// Static: no program interpreter and no shared libraries, so the one
	// binary runs on any Linux of its architecture.
	f, err := elf.Open(filepath.Join(dir, a.Binaries[0]))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a program interpreter: not static", a.Binaries[0])
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s links %v: not static", a.Binaries[0], libs)
	}
	f.Close()
	if r := sh(t, nil, "sh", "-c", "cd "+dir+" && sha256sum -c SHA256SUMS"); r.code != 0 || strings.Count(r.out, ": OK") != 2 {
		t.Errorf("sha256sum -c SHA256SUMS: exit %d:\n%s", r.code, r.out)
	}

	contents := sh(t, nil, "dpkg-deb", "--contents", deb).out
	for _, p := range []string{"./usr/bin/cryptshift", "./usr/share/man/man1/cryptshift.1.gz", "./usr/share/man/man1/cryptshift-doctor.1.gz",
		"./usr/share/bash-completion/completions/cryptshift", "./usr/share/zsh/vendor-completions/_cryptshift",
		"./usr/share/fish/vendor_completions.d/cryptshift.fish", "./usr/share/cryptshift/playbooks/verify.yml",
		"./usr/share/cryptshift/playbooks/roles/cryptshift/tasks/migrate.yml", "./usr/share/doc/cryptshift/docs/layout.md",
		"./usr/share/doc/cryptshift/docs/cli.md", "./usr/share/doc/cryptshift/docs/schema/verify-report.schema.json"} {
		if !strings.Contains(contents, p+"\n") {
			t.Errorf("the package lacks %s; it has:\n%s", p, contents)
		}
	}
	if strings.Contains(contents, "inventory-ci") || strings.Contains(contents, ".go\n") {
		t.Errorf("the package carries test fixtures or Go sources:\n%s", contents)
	}

	purgeOnCleanup(t)
	if r := sh(t, nil, "dpkg", "-i", deb); r.code != 0 {
		t.Fatalf("dpkg -i %s: exit %d:\n%s", deb, r.code, r.out)
	}
	if v := installedVersion(); v != "0.9.0+3.g1234abc" {
		t.Fatalf("dpkg says version %q is installed, want 0.9.0+3.g1234abc", v)
	}
	// From PATH, as an admin would run it.
	path := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if r := sh(t, path, "cryptshift", "--version"); r.code != 0 || r.out != "cryptshift "+testVersion+" (commit 1234abc00000)\n" {
		t.Errorf("cryptshift --version: exit %d, %q", r.code, r.out)
	}
	doc := sh(t, path, "cryptshift", "doctor")
	if doc.code != 0 && doc.code != 1 || !strings.Contains(doc.out, "What cryptshift can do here") || !strings.Contains(doc.out, "kernel.device-mapper") {
		t.Errorf("cryptshift doctor: exit %d, want 0 or 1 with a report:\n%s", doc.code, doc.out)
	}
	t.Logf("installed cryptshift doctor (exit %d):\n%s", doc.code, doc.out)
	if r := sh(t, path, "cryptshift", "doctor", "--for", "plan,verify-captured"); r.code != 0 {
		t.Errorf("cryptshift doctor --for plan,verify-captured: exit %d, want 0:\n%s", r.code, r.out)
	}

	// man finds the installed pages by name, not only by file.
	man := []string{"MANPAGER=cat", "PAGER=cat", "MANWIDTH=80", "LANG=C.UTF-8"}
	for page, want := range map[string]string{
		"cryptshift":        "cryptshift-doctor(1)",
		"cryptshift-doctor": "doctor checks what cryptshift needs on this host",
		"cryptshift-verify": "Art. 32",
	} {
		r := sh(t, man, "man", page)
		if r.code != 0 || !strings.Contains(r.out, want) {
			t.Errorf("man %s: exit %d, want text containing %q:\n%.600s", page, r.code, want, r.out)
		}
	}
	if r := sh(t, man, "man", "-l", DestMan+"/cryptshift-migrate.1.gz"); r.code != 0 || !strings.Contains(r.out, "CRYPTSHIFT-MIGRATE(1)") {
		t.Errorf("man -l cryptshift-migrate.1.gz: exit %d:\n%.600s", r.code, r.out)
	}

	// Bash: an interactive shell loads completions lazily through
	// bash-completion's _completion_loader, from the installed file.
	// The loader returns 124 ("loaded, retry the completion") on success.
	script := `source /usr/share/bash-completion/bash_completion
_completion_loader cryptshift || [ $? = 124 ]
complete -p cryptshift
complete_line() { COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; read -ra COMP_WORDS <<<"$1"; [ "${1: -1}" = " " ] && COMP_WORDS+=(""); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); COMPREPLY=(); __start_cryptshift 2>/dev/null; echo "$1 => ${COMPREPLY[*]}"; }
complete_line "cryptshift doc"
complete_line "cryptshift doctor --fo"
complete_line "cryptshift doctor --for "
complete_line "cryptshift migrate-h"
`
	r := sh(t, path, "bash", "-c", script)
	for _, want := range []string{
		"complete -o default -F __start_cryptshift cryptshift",
		"cryptshift doc => doctor",
		"cryptshift doctor --fo => --for",
		"cryptshift doctor --for  => plan verify-captured verify migrate-pool apply migrate-vg",
		"cryptshift migrate-h => migrate-host",
	} {
		if !strings.Contains(r.out, want+"\n") {
			t.Errorf("bash completion: want a line %q, got (exit %d):\n%s", want, r.code, r.out)
		}
	}
	for p, want := range map[string]string{DestZsh: "#compdef cryptshift", DestFish: "complete -c cryptshift"} {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), want) {
			t.Errorf("%s: %v, want it to contain %q", p, err, want)
		}
	}
	for _, shell := range []string{"zsh", "fish"} {
		if _, err := exec.LookPath(shell); err != nil {
			t.Logf("%s is not installed: its completion file was checked for content only", shell)
		}
	}
}

// TestHostReleaseIsReproducible: two builds of the same tree give the
// same package bytes (file times come from the commit, man pages carry its
// date, gzip stores no name or time). The two builds run back to back, so
// that edits to the working tree meanwhile are unlikely to make a
// difference the test would blame on the build.
func TestHostReleaseIsReproducible(t *testing.T) {
	testtier.Host(t, "go")
	repo, _ := filepath.Abs("..")
	var arts [2]*Artifacts
	var dirs [2]string
	for i := range arts {
		dirs[i] = t.TempDir()
		b := Build{Repo: repo, Version: testVersion, Commit: testCommit,
			Date: time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC), Out: dirs[i],
			Arches: []string{runtime.GOARCH}, Maintainer: DefaultMaintainer}
		a, err := b.All(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		arts[i] = a
	}
	for _, n := range append(arts[0].Debs, arts[0].Sums) {
		x, _ := os.ReadFile(filepath.Join(dirs[0], n))
		y, _ := os.ReadFile(filepath.Join(dirs[1], n))
		if len(x) == 0 || !bytes.Equal(x, y) {
			t.Errorf("%s differs between two builds of the same tree (%d and %d bytes)", n, len(x), len(y))
		}
	}
}
