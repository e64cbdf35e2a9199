package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/doors/qemuimg"
	"github.com/cryptshift/cryptshift/internal/harness/testtier"
)

const fixtures = "../../testdata/verify/"

func TestVerifyExitStatuses(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"reference host passes", []string{"verify", "--root", fixtures + "mailhost-luks-on-lvm/root"}, 0},
		{"plaintext swap fails", []string{"verify", "--root", fixtures + "swap-plain-partition/root"}, 1},
		{"warnings pass", []string{"verify", "--root", fixtures + "swap-lv-in-luks-pv/root", "-o", "json"}, 0},
		{"warnings fail with --strict", []string{"verify", "--root", fixtures + "swap-lv-in-luks-pv/root", "--strict"}, 1},
		{"unknown format", []string{"verify", "-o", "pdf"}, 2},
		{"unknown language", []string{"verify", "--lang", "fr"}, 2},
		{"bad date", []string{"verify", "--date", "22.11.2026"}, 2},
		{"root and image", []string{"verify", "--root", "/", "--image", "x.raw"}, 2},
		{"unknown flag", []string{"verify", "--nope"}, 2},
		{"missing root", []string{"verify", "--root", "/nonexistent/x"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, tt.args...)
			if r.code != tt.code {
				t.Errorf("got exit %d, want %d; stderr: %s", r.code, tt.code, r.stderr)
			}
		})
	}
}

// TestVerifyFailedLine: the verdict on standard error counts in words with
// their plurals, in the report's language and its terms.
func TestVerifyFailedLine(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--root", fixtures + "swap-plain-partition/root"}, "cryptshift: verification failed: 4 failures, 1 warning (see the report)\n"},
		{[]string{"--root", fixtures + "swap-plain-partition/root", "--lang", "de"}, "cryptshift: Prüfung nicht bestanden: 4 Mängel, 1 Warnung (siehe den Bericht)\n"},
		{[]string{"--root", fixtures + "swap-lv-in-luks-pv/root", "--strict"}, "cryptshift: verification failed with --strict: 1 warning (see the report)\n"},
	} {
		if r := run(t, append([]string{"verify"}, tt.args...)...); !strings.HasSuffix(r.stderr, tt.want) {
			t.Errorf("verify %v: stderr %q, want it to end in %q", tt.args, r.stderr, tt.want)
		}
	}
	for _, tt := range []struct {
		lang       string
		strict     bool
		fail, warn int
		want       string
	}{
		{"en", false, 1, 0, "verification failed: 1 failure (see the report)"},
		{"en", false, 2, 3, "verification failed: 2 failures, 3 warnings (see the report)"},
		{"de", false, 1, 2, "Prüfung nicht bestanden: 1 Mangel, 2 Warnungen (siehe den Bericht)"},
		{"de", true, 0, 2, "Prüfung mit --strict nicht bestanden: 2 Warnungen (siehe den Bericht)"},
	} {
		if got := failedLine(tt.lang, tt.strict, tt.fail, tt.warn); got != tt.want {
			t.Errorf("failedLine(%s, %v, %d, %d) = %q, want %q", tt.lang, tt.strict, tt.fail, tt.warn, got, tt.want)
		}
	}
}

// TestVerifyRefusesWhatIsNoHostTree: an empty directory, or the fixture
// folder instead of its root/, is no host: verify exits 2, names what is
// missing and how to fix it, and prints no report at all (so nothing can
// read as a PASS), with or without --strict and in every format.
func TestVerifyRefusesWhatIsNoHostTree(t *testing.T) {
	for _, dir := range []string{t.TempDir(), fixtures + "mailhost-luks-on-lvm"} {
		for _, args := range [][]string{{}, {"--strict"}, {"-o", "json"}, {"-o", "html", "--lang", "de"}} {
			r := run(t, append([]string{"verify", "--root", dir}, args...)...)
			if r.code != 2 || r.stdout != "" {
				t.Errorf("verify --root %s %v: exit %d, stdout %q; want exit 2 and no report", dir, args, r.code, r.stdout)
			}
			if !strings.Contains(r.stderr, "cannot verify "+dir+": not a host tree (no proc/self/mountinfo") || !strings.Contains(r.stderr, "fix:") {
				t.Errorf("verify --root %s: stderr %q does not say what is missing and how to fix it", dir, r.stderr)
			}
		}
	}
}

// TestVerifyIncompleteIsNoPass: a capture lacking facts verify needs for
// data at rest reports INCOMPLETE, says what it did not examine, and exits
// 2, not 0, even though nothing FAILed.
func TestVerifyIncompleteIsNoPass(t *testing.T) {
	r := run(t, "verify", "--root", fixtures+"partial-capture/root")
	if r.code != 2 || !strings.Contains(r.stdout, "INCOMPLETE: no PASS possible, not examined: hibernation, crash and core dumps, unlock methods of LUKS volumes and LUKS headers") ||
		strings.Contains(r.stdout, "Result: PASS") {
		t.Errorf("partial capture: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "NOT examined: crash and core dumps: coredump.pattern kernel.core_pattern") {
		t.Errorf("coverage does not say what was not examined:\n%s", r.stdout)
	}
}

func TestVerifyDate(t *testing.T) {
	r := run(t, "verify", "--root", fixtures+"mailhost-luks-on-lvm/root", "--date", "2026-02-30")
	if r.code != 2 {
		t.Errorf("--date 2026-02-30: exit %d, want 2 (no such day)", r.code)
	}
	r = run(t, "verify", "--root", fixtures+"mailhost-luks-on-lvm/root", "--date", "2025-01-31")
	if r.code != 0 || !strings.Contains(r.stdout, "Date: 2025-01-31 (set by the operator with --date, not the day of the check)") {
		t.Errorf("--date 2025-01-31: exit %d, the report does not mark the date as the operator's:\n%s", r.code, r.stdout)
	}
}

func TestVerifyJSONIsDeterministic(t *testing.T) {
	args := []string{"verify", "--root", fixtures + "libvirt-backing-plain/root", "-o", "json", "--date", "2026-12-01"}
	a, b := run(t, args...), run(t, args...)
	if a.stdout != b.stdout {
		t.Fatal("two runs gave different JSON")
	}
	var r struct {
		Header struct{ Date, Host string }
		Checks []struct {
			ID, Status, Subject, Explanation string
			Evidence                         []string
		}
		Summary struct{ Fail int }
	}
	if err := json.Unmarshal([]byte(a.stdout), &r); err != nil {
		t.Fatal(err)
	}
	if r.Header.Date != "2026-12-01" || r.Header.Host != "kvm2" || r.Summary.Fail == 0 {
		t.Errorf("header %+v, %d FAIL", r.Header, r.Summary.Fail)
	}
	for _, c := range r.Checks {
		if c.ID == "" || c.Status == "" || c.Subject == "" || c.Explanation == "" || c.Evidence == nil {
			t.Errorf("result misses a contract field: %+v", c)
		}
	}
}

// TestVerifyReportsSelfContained checks the HTML and Markdown evidence
// reports in both languages: no external assets, no scripts, the German
// one in German.
func TestVerifyReportsSelfContained(t *testing.T) {
	external := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:|//)|<script|<link|@import|url\(`)
	for _, lang := range []string{"en", "de"} {
		for _, format := range []string{"html", "markdown"} {
			out := filepath.Join(t.TempDir(), "report."+format)
			r := run(t, "verify", "--root", fixtures+"libvirt-leftover/root", "-o", format, "--lang", lang, "--out", out)
			if r.code != 1 {
				t.Fatalf("%s/%s: exit %d, want 1: %s", lang, format, r.code, r.stderr)
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			s := string(b)
			if m := external.FindString(s); m != "" {
				t.Errorf("%s/%s: external reference %q", lang, format, m)
			}
			word := map[string]string{"en": "Residual risks", "de": "Restrisiken"}[lang]
			// Names are searchable as they are: the fleet playbook greps the
			// fetched Markdown for mapping names like mx-disk_crypt.
			if !strings.Contains(s, word) || !strings.Contains(s, "libvirt.leftover") || !strings.Contains(s, "/var/lib/libvirt/images/mx.qcow2") || !strings.Contains(s, "mx-disk_crypt") {
				t.Errorf("%s/%s: report lacks %q, the check id or the leftover image", lang, format, word)
			}
		}
	}
}

func TestCaptureAndInspect(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "cap")
	r := run(t, "capture", "--root", fixtures+"zram-writeback-plain/root", dest)
	if r.code != 0 {
		t.Fatalf("capture: exit %d: %s", r.code, r.stderr)
	}
	a := run(t, "verify", "--root", fixtures+"zram-writeback-plain/root", "-o", "json")
	b := run(t, "verify", "--root", dest, "-o", "json")
	strip := regexp.MustCompile(`"(root|manifestSHA256)": "[^"]*"`)
	if strip.ReplaceAllString(a.stdout, "") != strip.ReplaceAllString(b.stdout, "") || a.code != b.code {
		t.Errorf("verify on the capture differs from verify on the tree")
	}
	if r := run(t, "capture", "--root", fixtures+"zram-writeback-plain/root", dest); r.code == 0 {
		t.Error("capture into a non-empty directory succeeded")
	}
	tree := run(t, "inspect", "--root", fixtures+"tmp-plain/root")
	if tree.code != 0 || !strings.Contains(tree.stdout, "/tmp (ext4)  <-- PLAINTEXT") || !strings.Contains(tree.stdout, "root_crypt (dm-4, LUKS2)") {
		t.Errorf("inspect tree (exit %d):\n%s", tree.code, tree.stdout)
	}
	hdr := run(t, "inspect", "-o", "json", "../../internal/hostview/sysconf/testdata/v2.qcow2.hdr")
	if hdr.code != 0 || !strings.Contains(hdr.stdout, `"backingFile": "/srv/old/plain.raw"`) {
		t.Errorf("inspect qcow2 (exit %d): %s %s", hdr.code, hdr.stdout, hdr.stderr)
	}
	if r := run(t, "inspect", "../../go.mod"); r.code != 1 {
		t.Errorf("inspect of a non-header: exit %d, want 1", r.code)
	}
}

// TestHostInspectEncryptedQCOW2: qemu-img makes a qcow2 with
// encrypt.format=luks (the secret from a file, never argv); inspect shows
// the cipher, key size and KDF of the LUKS header inside, and they match
// what qemu-img info reports.
func TestHostInspectEncryptedQCOW2(t *testing.T) {
	testtier.Host(t, "qemu-img")
	dir := t.TempDir()
	img := filepath.Join(dir, "enc.qcow2")
	// Through the door: it retries qemu 7.2's flaky PBKDF benchmark
	// ("Unable to get accurate CPU usage").
	if err := qemuimg.New().Create(context.Background(), qemuimg.CreateOptions{Path: img, Format: qemuimg.QCOW2,
		Size: 16 << 20, Secret: []byte("inspect test passphrase"), IterTimeMS: 10}); err != nil {
		t.Fatal(err)
	}
	info, err := exec.Command("qemu-img", "info", "--output=json", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	var qi struct {
		Spec struct {
			Data struct {
				Encrypt struct {
					CipherAlg  string `json:"cipher-alg"`
					CipherMode string `json:"cipher-mode"`
					IVGenAlg   string `json:"ivgen-alg"`
					Slots      []struct {
						Active bool `json:"active"`
						Iters  int  `json:"iters"`
					} `json:"slots"`
				} `json:"encrypt"`
			} `json:"data"`
		} `json:"format-specific"`
	}
	if err := json.Unmarshal(info, &qi); err != nil {
		t.Fatal(err)
	}
	enc := qi.Spec.Data.Encrypt
	r := run(t, "inspect", "-o", "json", img)
	var got struct {
		CryptMethod int `json:"cryptMethod"`
		Encryption  struct {
			Cipher   string `json:"cipher"`
			KeySize  int    `json:"keySize"`
			Keyslots []struct {
				KDF        string `json:"kdf"`
				Iterations int    `json:"iterations"`
			} `json:"keyslots"`
		} `json:"encryption"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != 0 {
		t.Fatalf("inspect: exit %d %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	wantCipher := strings.SplitN(enc.CipherAlg, "-", 2)[0] + "-" + enc.CipherMode + "-" + enc.IVGenAlg
	if got.CryptMethod != 2 || got.Encryption.Cipher != wantCipher || len(got.Encryption.Keyslots) == 0 ||
		got.Encryption.Keyslots[0].KDF != "pbkdf2" || got.Encryption.Keyslots[0].Iterations != enc.Slots[0].Iters {
		t.Errorf("inspect says %+v; qemu-img info says %+v", got, enc)
	}
	if enc.CipherAlg == "aes-256" && enc.CipherMode == "xts" && got.Encryption.KeySize != 512 {
		t.Errorf("key size %d, want 512 for aes-256 in xts", got.Encryption.KeySize)
	}
	text := run(t, "inspect", img)
	if !strings.Contains(text.stdout, "LUKS header inside") || !strings.Contains(text.stdout, "cipher "+wantCipher) {
		t.Errorf("inspect text:\n%s", text.stdout)
	}
}

// TestReportDigestMatchesJSON: the SHA-256 in the HTML and Markdown
// footers is the SHA-256 of `verify -o json` with the same options.
func TestReportDigestMatchesJSON(t *testing.T) {
	for _, lang := range []string{"en", "de"} {
		args := []string{"verify", "--root", fixtures + "tmp-plain/root", "--lang", lang}
		j := run(t, append(args, "-o", "json")...).stdout
		sum := sha256.Sum256([]byte(j))
		want := hex.EncodeToString(sum[:])
		for _, f := range []string{"html", "markdown"} {
			if out := run(t, append(args, "-o", f)...).stdout; !strings.Contains(out, want) {
				t.Errorf("%s %s: footer lacks the JSON report's SHA-256 %s", lang, f, want)
			}
		}
	}
}
