package doctor

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"syscall"

	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
)

// kernel is what /proc, /sys, the kernel configuration and /lib/modules say
// about the running kernel.
type kernel struct {
	fsys    rootfs.FS
	release string
	// config holds CONFIG_ symbols with their values ("y", "m", or a
	// string); nil when no configuration could be read.
	config       map[string]string
	configSource string
	// modulesDir is /lib/modules/RELEASE, "" when it does not exist.
	modulesDir string
	// modules maps a module's file base name without extension
	// ("dm-crypt") to its path under modulesDir, from modules.dep, and
	// builtin holds the names in modules.builtin.
	modules map[string]string
	builtin map[string]bool
	// blockDevs and miscDevs are the driver names in /proc/devices' block
	// section and /proc/misc.
	blockDevs map[string]bool
	miscDevs  map[string]bool
	crypto    map[string]bool // names in /proc/crypto
}

func readKernel(fsys rootfs.FS) *kernel {
	k := &kernel{fsys: fsys, release: strings.TrimSpace(string(readOr(fsys, "/proc/sys/kernel/osrelease")))}
	k.readConfig()
	if k.release != "" {
		dir := "/lib/modules/" + k.release
		if st, err := rootfs.Stat(fsys, dir); err == nil && st.IsDir() {
			k.modulesDir = dir
		}
	}
	k.modules = map[string]string{}
	k.builtin = map[string]bool{}
	if k.modulesDir != "" {
		for _, line := range lines(readOr(fsys, k.modulesDir+"/modules.dep")) {
			p, _, _ := strings.Cut(line, ":")
			k.modules[moduleName(p)] = p
		}
		for _, line := range lines(readOr(fsys, k.modulesDir+"/modules.builtin")) {
			k.builtin[moduleName(line)] = true
		}
	}
	k.blockDevs = map[string]bool{}
	inBlock := false
	for _, line := range lines(readOr(fsys, "/proc/devices")) {
		if strings.HasSuffix(line, ":") {
			inBlock = line == "Block devices:"
			continue
		}
		if f := strings.Fields(line); inBlock && len(f) == 2 {
			k.blockDevs[f[1]] = true
		}
	}
	k.miscDevs = map[string]bool{}
	for _, line := range lines(readOr(fsys, "/proc/misc")) {
		if f := strings.Fields(line); len(f) == 2 {
			k.miscDevs[f[1]] = true
		}
	}
	k.crypto = map[string]bool{}
	for _, line := range lines(readOr(fsys, "/proc/crypto")) {
		if name, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "name" {
			k.crypto[strings.TrimSpace(v)] = true
		}
	}
	return k
}

// readConfig reads the kernel configuration from /proc/config.gz
// (CONFIG_IKCONFIG_PROC) or Debian's /boot/config-RELEASE.
func (k *kernel) readConfig() {
	var text []byte
	if b, err := rootfs.ReadFile(k.fsys, "/proc/config.gz"); err == nil {
		if zr, err := gzip.NewReader(bytes.NewReader(b)); err == nil {
			if t, err := io.ReadAll(zr); err == nil {
				text, k.configSource = t, "/proc/config.gz"
			}
		}
	}
	if text == nil && k.release != "" {
		name := "/boot/config-" + k.release
		if b, err := rootfs.ReadFile(k.fsys, name); err == nil {
			text, k.configSource = b, name
		}
	}
	if text == nil {
		return
	}
	k.config = map[string]string{}
	for _, line := range lines(text) {
		if name, v, ok := strings.Cut(line, "="); ok && strings.HasPrefix(name, "CONFIG_") {
			k.config[name] = strings.Trim(v, `"`)
		}
	}
}

// moduleName turns "kernel/drivers/md/dm-crypt.ko.xz" into "dm-crypt".
// modprobe treats "-" and "_" alike; file names use either.
func moduleName(p string) string {
	b := path.Base(strings.TrimSpace(p))
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "_", "-")
}

func lines(b []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// feature is a kernel facility that can be built in, a module, or absent.
type feature struct {
	id, title string
	symbol    string   // CONFIG_ symbol
	parents   []string // menu symbols it depends on, e.g. CONFIG_MD
	module    string   // module name as in modules.dep ("dm-mod")
}

// source says how the kernel provides a feature, from its configuration
// and module files, when nothing live proves it.
type source struct {
	state  string // "builtin", "module", "module-missing", "absent", "unknown"
	reason string
}

func (k *kernel) source(f feature) source {
	if k.config != nil {
		for _, p := range f.parents {
			if v := k.config[p]; v != "y" && v != "m" {
				return source{"absent", fmt.Sprintf("%s is not set in %s, so neither is %s", p, k.configSource, f.symbol)}
			}
		}
		switch k.config[f.symbol] {
		case "y":
			return source{"builtin", fmt.Sprintf("built in (%s=y in %s)", f.symbol, k.configSource)}
		case "m":
			if p, ok := k.modules[f.module]; ok {
				return source{"module", fmt.Sprintf("module %s (%s=m; %s/%s)", f.module, f.symbol, k.modulesDir, p)}
			}
			where := "/lib/modules/" + k.release + " does not exist"
			if k.modulesDir != "" {
				where = k.modulesDir + " does not have it"
			}
			return source{"module-missing", fmt.Sprintf("built as module %s (%s=m in %s) but %s", f.module, f.symbol, k.configSource, where)}
		default:
			r := fmt.Sprintf("%s is not set in %s", f.symbol, k.configSource)
			if v := k.config["CONFIG_MODULES"]; v != "y" {
				r += "; the kernel cannot load modules either (CONFIG_MODULES is not set)"
			}
			return source{"absent", r}
		}
	}
	if k.builtin[f.module] {
		return source{"builtin", fmt.Sprintf("built in (%s/modules.builtin)", k.modulesDir)}
	}
	if p, ok := k.modules[f.module]; ok {
		return source{"module", fmt.Sprintf("module %s (%s/%s)", f.module, k.modulesDir, p)}
	}
	if k.modulesDir == "" {
		return source{"unknown", fmt.Sprintf("no kernel configuration (/proc/config.gz, /boot/config-%s) and no /lib/modules/%s to look in", k.release, k.release)}
	}
	return source{"unknown", fmt.Sprintf("no kernel configuration to read, and %s has no %s module", k.modulesDir, f.module)}
}

// kernelFix is the advice for a kernel that lacks a facility entirely.
func (k *kernel) kernelFix(what, symbols string) string {
	return fmt.Sprintf("boot a kernel with %s (%s; Debian's linux-image-amd64 has it as a module); "+
		"this one cannot gain it at run time. Where the host kernel is fixed (container, microVM), run apply in a VM",
		what, symbols)
}

var (
	featDM     = feature{"kernel.device-mapper", "kernel device-mapper (dm-mod)", "CONFIG_BLK_DEV_DM", []string{"CONFIG_MD"}, "dm-mod"}
	featDMCryp = feature{"kernel.dm-crypt", "kernel dm-crypt target", "CONFIG_DM_CRYPT", []string{"CONFIG_MD", "CONFIG_BLK_DEV_DM"}, "dm-crypt"}
	featLoop   = feature{"kernel.loop", "loop devices (to try layouts on image files)", "CONFIG_BLK_DEV_LOOP", nil, "loop"}
)

// deviceMapper: the dm core registers the block major "device-mapper" in
// /proc/devices and the misc device mapper/control in /proc/misc when it is
// loaded (drivers/md/dm.c, dm-ioctl.c).
func (k *kernel) deviceMapper(live bool) Check {
	c := Check{ID: featDM.id, Title: featDM.title}
	var evidence []string
	if k.blockDevs["device-mapper"] {
		evidence = append(evidence, "/proc/devices lists device-mapper")
	}
	if k.miscDevs["device-mapper"] {
		evidence = append(evidence, "/proc/misc lists device-mapper")
	}
	if len(evidence) > 0 {
		c.Status, c.Found = OK, "loaded: "+strings.Join(evidence, ", ")
		return c
	}
	found := "not loaded: /proc/devices does not list device-mapper"
	if live {
		// The node can exist (static /dev, devtmpfs leftovers) while the
		// driver behind it does not; opening it is the test libdevmapper
		// itself fails on ("Failure to communicate with kernel
		// device-mapper driver").
		if f, err := os.Open("/dev/mapper/control"); err == nil {
			f.Close()
		} else if errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.ENXIO) {
			found += "; /dev/mapper/control exists but opening it fails: no such device"
		} else if errors.Is(err, os.ErrNotExist) {
			found += "; /dev/mapper/control does not exist"
		}
	}
	s := k.source(featDM)
	found += "; " + s.reason
	c.Found = found
	switch s.state {
	case "builtin", "module":
		// modprobe loads it; libdevmapper also loads it when the control
		// node is opened on udev systems, but a host that never loaded it
		// deserves the explicit advice.
		c.Status, c.Fix = Warn, "load it: modprobe dm_mod (and add dm_mod to /etc/modules to load it at boot)"
	case "module-missing":
		c.Status, c.Fix = Fail, fmt.Sprintf("install the running kernel's modules (Debian: apt-get install linux-image-%s), or boot a kernel whose modules are installed", k.release)
	default:
		c.Status, c.Fix = Fail, k.kernelFix("device-mapper", "CONFIG_MD, CONFIG_BLK_DEV_DM")
	}
	return c
}

// dmCrypt: /sys/module/dm_crypt appears when the module is loaded; a
// built-in dm-crypt shows in the configuration or modules.builtin. The
// device-mapper core loads dm-crypt on demand when cryptsetup asks for a
// "crypt" target (dm_get_target_type requests "dm-crypt").
func (k *kernel) dmCrypt(dm Check) Check {
	c := Check{ID: featDMCryp.id, Title: featDMCryp.title}
	if rootfs.Exists(k.fsys, "/sys/module/dm_crypt") {
		c.Status, c.Found = OK, "loaded (/sys/module/dm_crypt)"
		return c
	}
	s := k.source(featDMCryp)
	c.Found = s.reason
	switch s.state {
	case "builtin":
		c.Status = OK
	case "module":
		c.Status, c.Found = OK, s.reason+"; loads on first use"
	case "module-missing":
		c.Status, c.Fix = Fail, fmt.Sprintf("install the running kernel's modules (Debian: apt-get install linux-image-%s)", k.release)
	default:
		c.Status, c.Fix = Fail, k.kernelFix("dm-crypt", "CONFIG_DM_CRYPT")
	}
	if c.Status == OK && dm.Status == Fail {
		// A dm-crypt module is no use without the core it plugs into.
		c.Status, c.Found, c.Fix = Skip, s.reason+"; unusable without device-mapper", ""
	}
	return c
}

func (k *kernel) loop() Check {
	c := Check{ID: featLoop.id, Title: featLoop.title}
	var evidence []string
	if k.blockDevs["loop"] {
		evidence = append(evidence, "/proc/devices lists loop")
	}
	if rootfs.Exists(k.fsys, "/dev/loop-control") {
		evidence = append(evidence, "/dev/loop-control exists")
	}
	if len(evidence) > 0 {
		c.Status, c.Found = OK, "available: "+strings.Join(evidence, ", ")
		return c
	}
	s := k.source(featLoop)
	c.Found = s.reason
	switch s.state {
	case "builtin", "module":
		c.Status, c.Fix = Warn, "load it: modprobe loop"
	case "module-missing":
		c.Status, c.Fix = Fail, fmt.Sprintf("install the running kernel's modules (Debian: apt-get install linux-image-%s)", k.release)
	default:
		c.Status, c.Fix = Fail, k.kernelFix("loop devices", "CONFIG_BLK_DEV_LOOP")
	}
	return c
}

// xtsAES: the planner's cipher is aes-xts-plain64. /proc/crypto lists
// xts(aes) once something instantiated it; otherwise the configuration
// says whether the xts template and an AES implementation exist.
func (k *kernel) xtsAES() Check {
	c := Check{ID: "kernel.xts-aes", Title: "kernel XTS-AES cipher (aes-xts-plain64)"}
	if k.crypto["xts(aes)"] {
		c.Status, c.Found = OK, "/proc/crypto lists xts(aes)"
		return c
	}
	if k.config != nil {
		xts, aes := k.config["CONFIG_CRYPTO_XTS"], k.config["CONFIG_CRYPTO_AES"]
		if aes != "y" && aes != "m" && (k.config["CONFIG_CRYPTO_AES_NI_INTEL"] == "y" || k.config["CONFIG_CRYPTO_AES_NI_INTEL"] == "m") {
			aes = k.config["CONFIG_CRYPTO_AES_NI_INTEL"]
		}
		if (xts == "y" || xts == "m") && (aes == "y" || aes == "m") {
			c.Status, c.Found = OK, fmt.Sprintf("CONFIG_CRYPTO_XTS=%s, AES=%s in %s", xts, aes, k.configSource)
			return c
		}
		c.Status, c.Found = Fail, fmt.Sprintf("CONFIG_CRYPTO_XTS=%q, CONFIG_CRYPTO_AES=%q in %s", xts, aes, k.configSource)
		c.Fix = k.kernelFix("the XTS mode and AES", "CONFIG_CRYPTO_XTS, CONFIG_CRYPTO_AES")
		return c
	}
	if _, ok := k.modules["xts"]; ok || k.builtin["xts"] {
		c.Status, c.Found = OK, "xts is available as a module or built in ("+k.modulesDir+")"
		return c
	}
	c.Status, c.Found = Warn, "cannot tell: /proc/crypto does not list xts(aes) yet and there is no kernel configuration to read"
	c.Fix = "cryptsetup benchmark -c aes-xts-plain64 shows whether the kernel has it"
	return c
}
