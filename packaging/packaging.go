// Package packaging builds cryptshift's release artifacts: static binaries
// (CGO_ENABLED=0, so one file runs on any Linux of its architecture), the
// man pages and shell completions generated from the command tree, a
// Debian package per architecture (with the nfpm library; no dpkg-dev on the
// build machine) and SHA256SUMS. "make dist" drives it through
// packaging/cmd/mkdist; the host-tier test installs the package it builds.
//
// Everything is reproducible from the commit: file times in the package and
// the man pages' date come from the commit time (SOURCE_DATE_EPOCH).
package packaging

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

// Build describes one release build.
type Build struct {
	// Repo is the module's root directory.
	Repo string
	// Version is what "git describe --tags --always --dirty" says
	// (v1.2.0, v1.2.0-3-gabc1234, abc1234-dirty); the binary reports it
	// as is, the package gets DebianVersion(Version).
	Version string
	Commit  string
	// Date is the commit time; it stamps every file in the package and
	// the man pages.
	Date time.Time
	// Out receives the artifacts.
	Out string
	// Arches are GOARCH values (amd64, arm64, ...); Debian uses the same
	// names for these.
	Arches []string
	// Maintainer is the package's Maintainer field.
	Maintainer string
	// Go is the go command; "" means "go".
	Go string
}

// DefaultMaintainer is a placeholder until the project has a list address.
const DefaultMaintainer = "cryptshift maintainers <maintainers@cryptshift.invalid>"

// Artifacts are the files a build produced, relative to Build.Out.
type Artifacts struct {
	Binaries []string // cryptshift_linux_ARCH
	Debs     []string // cryptshift_VERSION_ARCH.deb
	Sums     string   // SHA256SUMS
}

var (
	reRelease  = regexp.MustCompile(`^v?(\d+(?:\.\d+)*)(?:-(\d+)-g([0-9a-f]+))?(-dirty)?$`)
	reUntagged = regexp.MustCompile(`^([0-9a-f]{7,40})(-dirty)?$`)
)

// DebianVersion turns a git describe string into a Debian version that
// sorts the way releases do (deb-version(7)): v1.2.0 → 1.2.0, three commits
// later 1.2.0+3.gabc1234 (after 1.2.0), a dirty tree adds +dirty, and a
// tree without tags is 0.0.0~git.HASH (before any release).
func DebianVersion(describe string) string {
	if m := reRelease.FindStringSubmatch(describe); m != nil {
		v := m[1]
		if m[2] != "" {
			v += "+" + m[2] + ".g" + m[3]
		}
		if m[4] != "" {
			v += "+dirty"
		}
		return v
	}
	if m := reUntagged.FindStringSubmatch(describe); m != nil {
		v := "0.0.0~git." + m[1]
		if m[2] != "" {
			v += "+dirty"
		}
		return v
	}
	// Anything else (a hand-set VERSION): keep the characters Debian
	// allows in an upstream version and make it start with a digit.
	clean := regexp.MustCompile(`[^A-Za-z0-9.+~]`).ReplaceAllString(strings.TrimPrefix(describe, "v"), ".")
	if clean == "" || clean[0] < '0' || clean[0] > '9' {
		clean = "0.0.0~" + clean
	}
	return clean
}

func (b Build) goCmd() string {
	if b.Go != "" {
		return b.Go
	}
	return "go"
}

// BinaryName is the static binary's file name in Out.
func BinaryName(arch string) string { return "cryptshift_linux_" + arch }

// Binary builds the static binary for arch into Out.
func (b Build) Binary(ctx context.Context, arch string) (string, error) {
	out := filepath.Join(b.Out, BinaryName(arch))
	ldflags := fmt.Sprintf("-s -w -X main.version=%s -X main.commit=%s", b.Version, b.Commit)
	cmd := exec.CommandContext(ctx, b.goCmd(), "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", out, "./cmd/cryptshift")
	cmd.Dir = b.Repo
	// CGO_ENABLED=0: cryptshift needs no C library (go-libvirt speaks the
	// RPC protocol itself), so the binary is static and runs on any glibc
	// or musl system of its architecture.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if o, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("cannot build cryptshift for linux/%s: %v: %s", arch, err, o)
	}
	return out, nil
}

// GenDocs runs binary (which must run on this machine) to write the man
// pages into dir/man and the completions into dir/completions.
func GenDocs(ctx context.Context, binary, dir string, date time.Time) error {
	cmd := exec.CommandContext(ctx, binary, "gen-docs", "--man", filepath.Join(dir, "man"),
		"--completions", filepath.Join(dir, "completions"), "--date", date.UTC().Format("2006-01-02"))
	if o, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("cannot generate man pages and completions with %s: %v: %s", binary, err, o)
	}
	return nil
}

// Where the Debian package puts things (Debian policy 12.1; the
// bash-completion, zsh and fish packages' vendor directories).
const (
	DestBinary     = "/usr/bin/cryptshift"
	DestMan        = "/usr/share/man/man1"
	DestBash       = "/usr/share/bash-completion/completions/cryptshift"
	DestZsh        = "/usr/share/zsh/vendor-completions/_cryptshift"
	DestFish       = "/usr/share/fish/vendor_completions.d/cryptshift.fish"
	DestDoc        = "/usr/share/doc/cryptshift"
	DestPlaybooks  = "/usr/share/cryptshift/playbooks"
	completionBash = "cryptshift.bash"
	completionZsh  = "_cryptshift"
	completionFish = "cryptshift.fish"
)

// Deb packages binary with the generated docs in docs (GenDocs' layout)
// for arch, and returns its path.
func (b Build) Deb(binary, docs, arch string) (string, error) {
	stage := filepath.Join(docs, "stage")
	var contents files.Contents
	add := func(src, dst string, mode os.FileMode) {
		contents = append(contents, &files.Content{Source: src, Destination: dst,
			FileInfo: &files.ContentFileInfo{Mode: mode, MTime: b.Date, Owner: "root", Group: "root"}})
	}
	add(binary, DestBinary, 0o755)
	// Debian policy 12.1: man pages are installed compressed with gzip -9n
	// (no name, no time stamp, so the package stays reproducible).
	pages, err := filepath.Glob(filepath.Join(docs, "man", "*.1"))
	if err != nil || len(pages) == 0 {
		return "", fmt.Errorf("cannot package man pages: none in %s (run GenDocs first)", filepath.Join(docs, "man"))
	}
	sort.Strings(pages)
	for _, p := range pages {
		gz := filepath.Join(stage, "man", filepath.Base(p)+".gz")
		if err := gzipFile(p, gz); err != nil {
			return "", err
		}
		add(gz, DestMan+"/"+filepath.Base(gz), 0o644)
	}
	add(filepath.Join(docs, "completions", completionBash), DestBash, 0o644)
	add(filepath.Join(docs, "completions", completionZsh), DestZsh, 0o644)
	add(filepath.Join(docs, "completions", completionFish), DestFish, 0o644)
	if _, err := os.Stat(filepath.Join(b.Repo, "README.md")); err == nil {
		add(filepath.Join(b.Repo, "README.md"), DestDoc+"/README.md", 0o644)
	}
	ud, err := userDocs(b.Repo)
	if err != nil {
		return "", err
	}
	for _, rel := range ud {
		// Under docs/, so that the README's links (docs/layout.md) hold.
		add(filepath.Join(b.Repo, rel), DestDoc+"/"+filepath.ToSlash(rel), 0o644)
	}
	pb, err := playbookFiles(filepath.Join(b.Repo, "playbooks"))
	if err != nil {
		return "", err
	}
	for _, rel := range pb {
		add(filepath.Join(b.Repo, "playbooks", rel), DestPlaybooks+"/"+filepath.ToSlash(rel), 0o644)
	}

	info := &nfpm.Info{
		Name:          "cryptshift",
		Arch:          arch,
		Platform:      "linux",
		Version:       DebianVersion(b.Version),
		VersionSchema: "none",
		Section:       "admin",
		Priority:      "optional",
		Maintainer:    b.Maintainer,
		Homepage:      "https://github.com/cryptshift/cryptshift",
		Description: "put Linux hosts and their KVM guests onto LUKS-on-LVM, and prove it\n" +
			"cryptshift plans LUKS-on-LVM layouts, applies them to block devices with a\n" +
			"journal, resume and rollback, migrates libvirt guest disks onto encrypted\n" +
			"storage, and verifies that no plaintext leak path (swap, temp, dumps,\n" +
			"leftover copies, mail spools) remains, with a report usable as GDPR\n" +
			"Art. 32 evidence. Ansible playbooks for fleets are in\n" +
			DestPlaybooks + ".",
		MTime: b.Date,
		Overridables: nfpm.Overridables{
			Contents: contents,
			// The binary is static; the tools it drives are what
			// "cryptshift doctor" checks for.
			Recommends: []string{"cryptsetup-bin", "lvm2", "qemu-utils"},
			Suggests:   []string{"libvirt-daemon-system", "cryptsetup-initramfs", "ansible"},
			Deb:        nfpm.Deb{Compression: "xz"},
		},
	}
	if info.Maintainer == "" {
		info.Maintainer = DefaultMaintainer
	}
	nfpm.WithDefaults(info)
	name := deb.Default.ConventionalFileName(info)
	path := filepath.Join(b.Out, name)
	f, err := os.Create(path)
	if err != nil {
		return "", fmt.Errorf("cannot create %s: %w", path, err)
	}
	if err := deb.Default.Package(info, f); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("cannot build %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("cannot write %s: %w", path, err)
	}
	return path, nil
}

// playbookFiles lists what admins need from playbooks/: the playbooks, the
// role, their README and the example layouts; not the Go embedding code or
// the CI fixtures (inventory-ci).
func playbookFiles(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			if strings.HasPrefix(rel, "inventory-ci") {
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(p) {
		case ".yml", ".yaml", ".md", ".json", ".j2", ".cfg":
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cannot list the playbooks in %s: %w", dir, err)
	}
	sort.Strings(out)
	return out, nil
}

func gzipFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", src, err)
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(data)
	if err := zw.Close(); err != nil {
		return fmt.Errorf("cannot compress %s: %w", src, err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("cannot create %s: %w", filepath.Dir(dst), err)
	}
	if err := os.WriteFile(dst, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("cannot write %s: %w", dst, err)
	}
	return nil
}

// WriteSums writes SHA256SUMS in Out for names (relative to Out), in the
// format "sha256sum -c" reads.
func WriteSums(out string, names []string) (string, error) {
	sorted := append([]string{}, names...)
	sort.Strings(sorted)
	var b strings.Builder
	for _, n := range sorted {
		f, err := os.Open(filepath.Join(out, n))
		if err != nil {
			return "", fmt.Errorf("cannot checksum %s: %w", n, err)
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", fmt.Errorf("cannot checksum %s: %w", n, err)
		}
		fmt.Fprintf(&b, "%s  %s\n", hex.EncodeToString(h.Sum(nil)), n)
	}
	p := filepath.Join(out, "SHA256SUMS")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		return "", fmt.Errorf("cannot write %s: %w", p, err)
	}
	return p, nil
}

// All builds every artifact: the binaries, docs generated by the binary for
// this machine's architecture, one .deb per architecture, SHA256SUMS.
func (b Build) All(ctx context.Context) (*Artifacts, error) {
	if len(b.Arches) == 0 {
		return nil, fmt.Errorf("cannot build a release: no architectures given")
	}
	if err := os.MkdirAll(b.Out, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create %s: %w", b.Out, err)
	}
	work, err := os.MkdirTemp("", "cryptshift-dist-")
	if err != nil {
		return nil, fmt.Errorf("cannot create a work directory: %w", err)
	}
	defer os.RemoveAll(work)
	// The docs come from running a binary, so one for this machine comes
	// first; it goes with the release only when its architecture does.
	host := b
	if !contains(b.Arches, runtime.GOARCH) {
		host.Out = work
	}
	hostBin, err := host.Binary(ctx, runtime.GOARCH)
	if err != nil {
		return nil, err
	}
	if err := GenDocs(ctx, hostBin, work, b.Date); err != nil {
		return nil, err
	}
	a := &Artifacts{}
	var names []string
	for _, arch := range b.Arches {
		bin := hostBin
		if arch != runtime.GOARCH {
			if bin, err = b.Binary(ctx, arch); err != nil {
				return nil, err
			}
		}
		d, err := b.Deb(bin, work, arch)
		if err != nil {
			return nil, err
		}
		a.Binaries = append(a.Binaries, filepath.Base(bin))
		a.Debs = append(a.Debs, filepath.Base(d))
		names = append(names, filepath.Base(bin), filepath.Base(d))
	}
	sums, err := WriteSums(b.Out, names)
	if err != nil {
		return nil, err
	}
	a.Sums = filepath.Base(sums)
	return a, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// userDocs are the documents an admin reads (the layout reference, the
// command-line contract, the plan and verify formats and their JSON
// schemas, the choice between raw and qcow2 pool: targets), relative to
// the repository; not the developer notes.
func userDocs(repo string) ([]string, error) {
	files := []string{"docs/layout.md", "docs/cli.md", "docs/plan-schema.md", "docs/verify.md", "docs/pool-targets.md"}
	schemas, err := filepath.Glob(filepath.Join(repo, "docs", "schema", "*.schema.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(schemas)
	for _, p := range schemas {
		files = append(files, "docs/schema/"+filepath.Base(p))
	}
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(repo, f)); err != nil {
			return nil, fmt.Errorf("cannot package the documentation: %w", err)
		}
	}
	return files, nil
}
