package verify

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/cryptshift/cryptshift/internal/audit/manifest"
	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
	"github.com/cryptshift/cryptshift/internal/hostview/sysconf"
)

// Options select what to verify and how to word the report.
type Options struct {
	Root    string // a directory: "/" (live) or a captured tree; default "/"
	Image   string // a guest disk image (raw); exclusive with Root
	Lang    string // "en" (default) or "de"
	Date    string // report date override, YYYY-MM-DD
	Version string // tool version for the report header
	Commit  string // the commit the tool was built from
	Now     func() time.Time
	// FS, when set, is read instead of the directory Root (capture passes
	// a recorder wrapping the live root).
	FS rootfs.FS
	// Live says that Root is this machine's own running system; default:
	// Root is "/" (or empty) and no FS is given.
	Live *bool
}

// ErrNotHostTree is wrapped by Run's error for a directory that lacks the
// essentials of a host: nothing in it could be verified.
var ErrNotHostTree = errors.New("not a host tree")

// Run verifies the system and returns the report. An error means the
// verification could not run at all (bad root, not a host tree, unreadable
// image); facts that are merely missing become SKIP results, and the
// coverage says what was not examined.
func Run(o Options) (*Report, error) {
	if o.Lang == "" {
		o.Lang = "en"
	}
	if !Supported(o.Lang) {
		return nil, fmt.Errorf("cannot verify: unknown language %q (want en or de)", o.Lang)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	today := o.Now().UTC().Format(time.DateOnly)
	if o.Date != "" {
		if _, err := time.Parse(time.DateOnly, o.Date); err != nil {
			return nil, fmt.Errorf("cannot verify: bad date %q: want a real day as YYYY-MM-DD", o.Date)
		}
	}
	e := &env{lang: o.Lang, refused: map[string]string{}, inputs: map[string]string{}}
	hdr := Header{Tool: "cryptshift verify", Version: o.Version, Commit: o.Commit, Lang: o.Lang}
	if o.Image != "" {
		if o.Root != "" && o.Root != "/" {
			return nil, fmt.Errorf("cannot verify: --image and --root exclude each other")
		}
		img, err := openImage(o.Image)
		if err != nil {
			return nil, err
		}
		defer img.Close()
		img.lang = o.Lang
		e.fs, e.image = &watch{FS: img, e: e}, img
		hdr.Source, hdr.Root = "image", o.Image
		if fi, err := img.f.Stat(); err == nil {
			hdr.ImageSize = fi.Size()
		}
	} else {
		root := o.Root
		if root == "" {
			root = "/"
		}
		st, err := os.Stat(root)
		if err != nil {
			return nil, fmt.Errorf("cannot verify %s: %w", root, err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("cannot verify %s: not a directory (use --image for disk images)", root)
		}
		var base rootfs.FS = rootfs.Dir(root)
		if o.FS != nil {
			base = o.FS
		}
		e.live = o.FS == nil && rootfs.Dir(root).Live()
		if o.Live != nil {
			e.live = *o.Live
		}
		e.fs = &watch{FS: base, e: e}
		hdr.Root = root
		m, captured, err := manifest.ReadManifest(e.fs)
		if err != nil {
			return nil, err
		}
		e.manifest = m
		hdr.Source = "live"
		if captured {
			hdr.Source = "capture"
			if b, err := rootfs.ReadFile(e.fs, manifest.ManifestPath); err == nil {
				hdr.ManifestSHA256 = fmt.Sprintf("%x", sha256.Sum256(b))
			}
		} else if !e.live {
			hdr.Source = "tree"
		}
		sys, err := blockstack.Scan(e.fs)
		if err != nil {
			return nil, fmt.Errorf("cannot verify %s: %w", root, err)
		}
		if err := hostTree(root, sys); err != nil {
			return nil, err
		}
		e.sys = sys
	}
	e.load()
	hdr.Host, hdr.Kernel = e.hostInfo()
	switch {
	case o.Date != "":
		hdr.Date, hdr.DateSource = o.Date, "operator"
		if o.Date == today {
			hdr.DateSource = "today"
		}
	case e.manifest != nil && e.manifest.Date != "":
		hdr.Date, hdr.DateSource = e.manifest.Date, "capture"
	default:
		hdr.Date, hdr.DateSource = today, "today"
	}
	e.prepare()
	for _, c := range checks {
		if e.image != nil && c.liveOnly {
			continue
		}
		c.run(e)
	}
	r := &Report{Schema: SchemaID, Header: hdr, Checks: e.results, Volumes: e.volumes, Inputs: e.inputs}
	r.Risks = e.risks()
	var refused []string
	for p, why := range e.refused {
		refused = append(refused, p+": "+why)
	}
	r.finish(e.image != nil, refused)
	return r, nil
}

// hostTree refuses a directory that lacks what every Linux host has: a
// mount table with "/", the swap table and the block devices under /sys.
// Without them no verdict can rest on evidence.
func hostTree(root string, sys *blockstack.System) error {
	missing := sys.HostTreeGaps()
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("cannot verify %s: %w (no %s); fix: give the top of a tree made by `cryptshift capture` (the directory holding proc/, sys/ and etc/; for a test fixture its root/), or run verify on the host itself without --root",
		root, ErrNotHostTree, strings.Join(missing, ", no "))
}

// watch wraps the root verify reads and notes every input refused as
// unsafe (a FIFO, a device node, an escaping or looping link, a file too
// large), so the report can say what it did not read and why.
type watch struct {
	rootfs.FS
	e *env
}

func (w *watch) Refuse(name string, err error) {
	why := err.Error()
	for _, x := range []error{rootfs.ErrLoop, rootfs.ErrTooLarge, rootfs.ErrNotRegular, rootfs.ErrDevice, rootfs.ErrDotDot} {
		if errors.Is(err, x) {
			why = x.Error()
		}
	}
	w.e.refused[rootfs.Clean(name)] = why
}

func (w *watch) note(name string, err error) {
	if err != nil && rootfs.Refused(err) {
		w.Refuse(name, err)
	}
}

func (w *watch) Open(name string) (rootfs.File, error) {
	f, err := w.FS.Open(name)
	w.note(name, err)
	return f, err
}

func (w *watch) OpenDevice(name string) (rootfs.File, error) {
	var f rootfs.File
	var err error
	if d, ok := w.FS.(rootfs.DeviceOpener); ok {
		f, err = d.OpenDevice(name)
	} else {
		f, err = w.FS.Open(name)
	}
	w.note(name, err)
	return f, err
}

// check is one family of checks; run adds its results to the env.
type check struct {
	name     string
	run      func(*env)
	liveOnly bool // needs a running system (proc, sys): not for --image
}

// checks is every check family in the order it runs (the report groups
// results by area afterwards). A new check goes here, nowhere else;
// TestCheckOrder pins the list. liveOnly: the family needs the running
// (or captured) host's block stack and does not run on --image.
var checks = []check{
	{"core-pattern", checkCorePattern, false},
	{"systemd-coredump", checkSystemdCoredump, false},
	{"crash-dir", checkCrashDir, false},
	{"kdump", checkKdump, false},
	{"crypttab-keys", checkCrypttabKeys, false},
	{"initramfs-keys", checkInitramfsKeys, false},
	{"header-backups", checkHeaderBackups, false},
	{"libvirt", checkLibvirt, false},
	{"luks", checkLUKS, true},
	{"crypttab-ciphers", checkCrypttabCiphers, false},
	{"lvm-snapshots", checkLVMSnapshots, true},
	{"lvm-leftovers", checkLVMLeftovers, true},
	{"lvm-metadata", checkLVMMetadata, true},
	{"postfix", checkPostfix, false},
	{"dovecot", checkDovecot, false},
	{"filters", checkFilters, false},
	{"mounts", checkMounts, true},
	{"disk-leftovers", checkDiskLeftovers, true},
	{"swap-active", checkSwapActive, true},
	{"zram", checkZram, true},
	{"swap-fstab", checkSwapFstab, false},
	{"swap-crypttab", checkSwapCrypttab, false},
	{"resume", checkResume, false},
	{"tmp", checkTmp, false},
	{"logs", checkLogs, false},
	{"shm", checkShm, true},
	{"image-partitions", checkImageParts, false},
}

// checkImageParts judges a guest image's partitions; nothing on a host.
func checkImageParts(e *env) {
	if e.image != nil {
		checkImagePartitions(e)
	}
}

// env is what every check reads: the root, the block stack (or the
// guest image's offline view), parsed configuration, the capture manifest.
type env struct {
	fs       rootfs.FS
	sys      *blockstack.System // nil for images
	image    *guestImage        // nil unless --image
	manifest *manifest.Manifest // nil unless a captured tree
	lang     string
	live     bool              // the running system itself: absence of a file is evidence
	refused  map[string]string // inputs refused as unsafe, with why
	inputs   map[string]string // configuration files read elsewhere than usual, and their kind
	headers  map[string]headerResult

	fstab       []sysconf.FstabEntry
	fstabErr    error
	crypttab    []sysconf.CrypttabEntry
	crypttabErr error
	passwd      []sysconf.PasswdEntry
	passwdErr   error // why /etc/passwd could not be read: the homes are unknown

	results []Result
	volumes []Volume
	extra   []string // residual risks found by checks

	swapDone bool
	swapSt   Status
	swapEv   []string
}

func (e *env) load() {
	if b, err := rootfs.ReadFile(e.fs, "/etc/fstab"); err == nil {
		e.fstab, e.fstabErr = sysconf.ParseFstab(strings.NewReader(string(b)))
	} else {
		e.fstabErr = err
	}
	if b, err := rootfs.ReadFile(e.fs, "/etc/crypttab"); err == nil {
		e.crypttab, e.crypttabErr = sysconf.ParseCrypttab(strings.NewReader(string(b)))
	} else {
		e.crypttabErr = err
	}
	if b, err := rootfs.ReadFile(e.fs, "/etc/passwd"); err == nil {
		e.passwd = sysconf.ParsePasswd(string(b))
	} else {
		e.passwdErr = err
	}
}

// line names a line of a configuration file in the report's language.
func (e *env) line(file string, n int) string { return e.t("ev.line", file, n) }

// unreadable words a read error as evidence; a missing file is "absent".
func (e *env) unreadable(p string, err error) string {
	if errors.Is(err, fs.ErrNotExist) {
		return e.t("ev.absent", p)
	}
	return e.t("ev.unreadable", p, err)
}

// mode returns a file's permission bits: from the capture manifest when it
// recorded them, else from the tree.
func (e *env) mode(p string) (fs.FileMode, error) {
	if e.manifest != nil {
		if r, err := rootfs.Resolve(e.fs, p); err == nil {
			if m, ok := e.manifest.Modes[r]; ok {
				return fs.FileMode(m).Perm(), nil
			}
		}
	}
	fi, err := rootfs.Stat(e.fs, p)
	if err != nil {
		return 0, err
	}
	return fi.Mode().Perm(), nil
}

func (e *env) read(p string) (string, bool) {
	b, err := rootfs.ReadFile(e.fs, p)
	if err != nil {
		return "", false
	}
	return string(b), true
}

func (e *env) exists(p string) bool { return rootfs.Exists(e.fs, p) }

func (e *env) hostInfo() (host, kernel string) {
	if e.manifest != nil {
		return e.manifest.Host, e.manifest.Kernel
	}
	for _, p := range []string{"/proc/sys/kernel/hostname", "/etc/hostname"} {
		if s, ok := e.read(p); ok && strings.TrimSpace(s) != "" {
			host = strings.TrimSpace(s)
			break
		}
	}
	if s, ok := e.read("/proc/sys/kernel/osrelease"); ok {
		kernel = strings.TrimSpace(s)
	}
	return host, kernel
}

// add records a result; explanation and fix come from the catalog.
func (e *env) add(id string, st Status, subject string, evidence ...string) {
	e.addFix(id, id+".fix", st, subject, evidence...)
}

// addFix records a result with a specific fix text from the catalog.
func (e *env) addFix(id, fixKey string, st Status, subject string, evidence ...string) {
	e.addKind(id, fixKey, st, "", subject, evidence...)
}

// addKind records a result whose finding is not the default for its id.
func (e *env) addKind(id, fixKey string, st Status, finding, subject string, evidence ...string) {
	r := Result{ID: id, Status: st, Subject: subject, Evidence: evidence, Explanation: e.t(id + ".why")}
	if st == Fail || st == Warn {
		r.Fix = e.t(fixKey)
		r.Finding = finding
		if r.Finding == "" {
			r.Finding = defaultFinding(id, st)
		}
	}
	if st == Skip {
		r.Skip = SkipMissing
		for _, ev := range evidence {
			if e.refusedEvidence(ev) {
				r.Skip = SkipRefused
			}
		}
	}
	e.results = append(e.results, r)
}

// defaultFinding is what a FAIL or WARN of a check is about unless the
// check says otherwise.
func defaultFinding(id string, st Status) string {
	switch {
	case strings.Contains(id, "leftover") || id == "lvm.snapshot":
		return FindingLeftover
	case strings.HasPrefix(id, "luks."):
		return FindingWeak
	case strings.HasPrefix(id, "keys."):
		return FindingKeys
	case st == Fail:
		return FindingPlaintext
	}
	return FindingUnknown
}

func (e *env) refusedEvidence(ev string) bool {
	for _, x := range []error{rootfs.ErrLoop, rootfs.ErrTooLarge, rootfs.ErrNotRegular, rootfs.ErrDevice, rootfs.ErrDotDot} {
		if strings.Contains(ev, x.Error()) {
			return true
		}
	}
	return false
}

// skip records that a check could not run because its inputs are missing
// (or were refused), and why.
// has reports whether a result for id has been recorded.
func (e *env) has(id string) bool {
	for _, r := range e.results {
		if r.ID == id {
			return true
		}
	}
	return false
}

func (e *env) skip(id, subject string, why ...string) { e.add(id, Skip, subject, why...) }

// na records that a check read its inputs and found nothing of its kind.
func (e *env) na(id, subject string, why ...string) {
	e.add(id, Skip, subject, why...)
	e.results[len(e.results)-1].Skip = SkipNotApplicable
}

// naIfAbsent records that a check does not apply because its input p is
// known not to exist; when its absence cannot be told (a tree that may
// simply lack it), the check is SKIP for a missing input instead.
func (e *env) naIfAbsent(id, subject, p string) {
	if e.absent(p) {
		e.na(id, subject, e.t("ev.absent", p))
		return
	}
	e.skip(id, subject, e.t("ev.notcaptured", p))
}

// crypttabSkip records a check that needs /etc/crypttab when it could not
// be read: not applicable when the system has none, else not checked.
func (e *env) crypttabSkip(id string) {
	if errors.Is(e.crypttabErr, fs.ErrNotExist) && e.absent("/etc/crypttab") {
		e.na(id, "/etc/crypttab", e.t("ev.absent", "/etc/crypttab"))
		return
	}
	e.skip(id, "/etc/crypttab", e.unreadable("/etc/crypttab", e.crypttabErr))
}

// absent reports whether p is known not to exist on the verified system:
// on the live system its absence is a fact; in a capture only when capture
// recorded it as absent; in any other tree it cannot be told.
func (e *env) absent(p string) bool {
	if e.exists(p) {
		return false
	}
	if e.live || e.image != nil {
		return true
	}
	return e.manifest != nil && e.manifest.IsAbsent(p)
}

// locate says where data written to p lands.
func (e *env) locate(p string) blockstack.Location {
	if e.image != nil {
		return e.image.Locate(p)
	}
	return e.sys.Locate(p)
}

// locateSpec classifies a device named the way fstab, crypttab or the
// kernel command line name them: /dev/..., UUID=..., PARTUUID=..., LABEL=.
func (e *env) locateSpec(spec string) blockstack.Location {
	if e.image != nil {
		return e.image.LocateSpec(spec)
	}
	p := specPath(spec)
	if d := e.sys.DeviceByPath(p); d != nil {
		loc := e.sys.Classify(d)
		loc.Path = spec
		return loc
	}
	// Not active now: crypttab says whether it would be a crypt node.
	if name, ok := strings.CutPrefix(p, "/dev/mapper/"); ok {
		for _, c := range e.crypttab {
			if c.Name == name {
				return blockstack.Location{Path: spec, Class: blockstack.Encrypted, Crypt: []string{name},
					Reason: "crypttab", Evidence: e.line("/etc/crypttab", c.Line) + fmt.Sprintf(": %s %s", c.Name, c.Device)}
			}
		}
	}
	return blockstack.Location{Path: spec, Class: blockstack.Unknown, Reason: "no such device",
		Evidence: spec + ": " + e.t("ev.nodevice")}
}

// specPath turns UUID=x and friends into the /dev/disk/by-* link udev makes.
func specPath(spec string) string {
	for _, p := range []struct{ tag, dir string }{
		{"UUID=", "/dev/disk/by-uuid/"}, {"PARTUUID=", "/dev/disk/by-partuuid/"},
		{"LABEL=", "/dev/disk/by-label/"}, {"PARTLABEL=", "/dev/disk/by-partlabel/"},
		{"ID=", "/dev/disk/by-id/"},
	} {
		if v, ok := strings.CutPrefix(spec, p.tag); ok {
			return p.dir + strings.Trim(v, `"`)
		}
	}
	return spec
}

// statusOf turns a storage class into a status. RAM is as safe as the
// swap that its pages may be written to.
func (e *env) statusOf(loc blockstack.Location) (Status, []string) {
	ev := []string{e.where(loc)}
	switch loc.Class {
	case blockstack.Encrypted:
		return Pass, ev
	case blockstack.Plaintext:
		return Fail, ev
	case blockstack.RAM:
		st, sev := e.swapState()
		switch st {
		case Pass:
			return Pass, append(ev, e.t("ev.ram.swapsafe"))
		case Fail:
			return Fail, append(append(ev, e.t("ev.ram.swapplain")), sev...)
		default:
			return Warn, append(ev, e.t("ev.ram.swapunknown"))
		}
	}
	if e.sys != nil && !e.sys.HaveMounts() {
		return Skip, []string{e.t("ev.nomounts")}
	}
	if loc.Mount != nil && blockstack.IsNetworkFS(loc.Mount.FSType) {
		ev = append(ev, e.t("ev.libvirt.network"))
	}
	return Warn, ev
}

// where renders a location as one evidence line.
func (e *env) where(loc blockstack.Location) string {
	p := loc.Path
	if loc.Resolved != "" && loc.Resolved != rootfs.Clean(loc.Path) {
		p += " (→ " + loc.Resolved + ")"
	}
	s := p + " ⇒ " + e.t("class."+string(loc.Class))
	if loc.Evidence != "" {
		s += ": " + e.chainWords(loc.Evidence)
	}
	return s
}

// chainNotes are the notes blockstack puts into a storage chain, which is
// language-neutral otherwise (device names, lsblk's kinds); German reports
// get them in German.
var chainNotes = [][2]string{
	{"(see above)", "(siehe oben)"}, {": no encryption)", ": keine Verschlüsselung)"}, {"(device loop)", "(Geräteschleife)"},
	{"(no slaves)", "(keine unterliegenden Geräte)"}, {"(no backing file)", "(keine Backing-Datei)"}, {" (not in sysfs)", " (nicht in sysfs)"},
	{"(file ", "(Datei "}, {" (outside this root)", " (außerhalb dieser Wurzel)"}, {" → source ", " → Quelle "},
	{"(the FUSE mount itself)", "(der FUSE-Mount selbst)"},
}

func (e *env) chainWords(s string) string {
	if e.lang != "de" {
		return s
	}
	for _, n := range chainNotes {
		s = strings.ReplaceAll(s, n[0], n[1])
	}
	// lsblk's kinds (blockstack's Label): "sdb2 (sdb part 2)" and
	// "sdb (disk)" read as German words to an auditor.
	s = chainPart.ReplaceAllString(s, "($1, Partition $2)")
	s = strings.ReplaceAll(s, " (disk)", " (Platte)")
	return s
}

var chainPart = regexp.MustCompile(`\((\S+) part (\d+)\)`)

// swapState is the worst verdict over every place memory pages can be
// written to: active swap areas (live) or configured ones (image).
func (e *env) swapState() (Status, []string) {
	if e.swapDone {
		return e.swapSt, e.swapEv
	}
	e.swapDone = true
	e.swapSt = Pass
	if e.sys != nil {
		if !e.sys.HaveSwaps() {
			e.swapSt = Warn
			return e.swapSt, nil
		}
		for _, sw := range e.sys.Swaps {
			e.judgeSwap(e.swapLocation(sw))
		}
		return e.swapSt, e.swapEv
	}
	for _, f := range e.fstab {
		if f.VFSType != "swap" {
			continue
		}
		e.judgeSwap(e.fstabSwapLocation(f))
	}
	return e.swapSt, e.swapEv
}

// judgeSwap folds one swap area's location into the swap verdict: FAIL
// with evidence for plaintext, WARN when unknown (unless already FAIL).
func (e *env) judgeSwap(loc blockstack.Location) {
	switch loc.Class {
	case blockstack.Plaintext:
		e.swapSt = Fail
		e.swapEv = append(e.swapEv, e.where(loc))
	case blockstack.Unknown:
		if e.swapSt == Pass {
			e.swapSt = Warn
		}
	}
}

func (e *env) swapLocation(sw blockstack.Swap) blockstack.Location {
	if sw.Type == "file" {
		return e.locate(sw.Filename)
	}
	if d := e.sys.DeviceByPath(sw.Filename); d != nil {
		loc := e.sys.Classify(d)
		loc.Path = sw.Filename
		return loc
	}
	return blockstack.Location{Path: sw.Filename, Class: blockstack.Unknown, Evidence: sw.Filename + ": " + e.t("ev.nodevice")}
}

func (e *env) fstabSwapLocation(f sysconf.FstabEntry) blockstack.Location {
	if strings.HasPrefix(f.Spec, "/") && !strings.HasPrefix(f.Spec, "/dev/") {
		return e.locate(f.Spec) // a swap file
	}
	return e.locateSpec(f.Spec)
}

// homes returns the home directories of login users (UID 1000..59999 on
// Debian, adduser.conf FIRST_UID..LAST_UID) and root, sorted.
// homesUnknown says why the system accounts' homes cannot be listed
// ("" when they can): without /etc/passwd a path under "~" names no
// directory verify could judge, and no default stands in for it.
func (e *env) homesUnknown() string {
	if e.passwdErr == nil {
		return ""
	}
	if rootfs.Refused(e.passwdErr) {
		return e.t("ev.homes.unknown", e.passwdErr.Error())
	}
	return e.t("ev.homes.unknown", e.t("ev.notcaptured", "/etc/passwd"))
}

func (e *env) homes() []string {
	var out []string
	for _, p := range e.passwd {
		if p.UID == 0 || p.UID >= 1000 && p.UID < 60000 {
			if p.Home != "" && p.Home != "/" && p.Home != "/nonexistent" {
				out = append(out, path.Clean(p.Home))
			}
		}
	}
	sort.Strings(out)
	return dedup(out)
}

func dedup(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func (e *env) risk(key string, args ...any) { e.extra = append(e.extra, e.t(key, args...)) }

// risks lists what remains even when every check passes, plus what the
// checks found worth saying.
func (e *env) risks() []string {
	out := []string{e.t("risk.running"), e.t("risk.boot"), e.t("risk.ssd")}
	if e.image != nil {
		out = append(out, e.t("risk.image"))
	}
	if e.manifest != nil {
		out = append(out, e.t("risk.capture"))
	}
	extra := append([]string{}, e.extra...)
	sort.Strings(extra)
	return append(out, dedup(extra)...)
}
