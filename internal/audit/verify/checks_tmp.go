package verify

import (
	"strings"

	"github.com/cryptshift/cryptshift/internal/hostview/sysconf"
)

// tmp.*: programs that open mail attachments write temporary copies here.
func checkTmp(e *env) {
	for _, t := range []struct{ id, p string }{{"tmp.tmp", "/tmp"}, {"tmp.var-tmp", "/var/tmp"}} {
		e.locationCheck(t.id, t.p, t.p)
	}
}

func checkShm(e *env) { e.locationCheck("tmp.dev-shm", "/dev/shm", "/dev/shm") }

// locationCheck is the common check: where does data written to p land?
func (e *env) locationCheck(id, subject, p string, extra ...string) {
	loc := e.locate(p)
	st, ev := e.statusOf(loc)
	e.add(id, st, subject, append(extra, ev...)...)
}

// logs.*: logs hold mail addresses, subjects and sometimes content.
func checkLogs(e *env) {
	e.locationCheck("logs.var-log", "/var/log", "/var/log")
	const id = "logs.journal"
	conf, files := sysconf.ReadSystemdConf(e.fs, "systemd/journald.conf")
	storage := "auto" // journald.conf(5) default
	src := "journald.conf: Storage= " + e.t("ev.default")
	if s, ok := conf["Journal.Storage"]; ok {
		storage, src = strings.ToLower(s.Value), s.File+": Storage="+s.Value
	}
	_ = files
	switch storage {
	case "none":
		e.add(id, Pass, "journald", src)
	case "volatile":
		e.locationCheck(id, "/run/log/journal", "/run/log/journal", src)
	case "persistent":
		e.locationCheck(id, "/var/log/journal", "/var/log/journal", src)
	default: // auto: persistent if /var/log/journal exists
		if e.exists("/var/log/journal") {
			e.locationCheck(id, "/var/log/journal", "/var/log/journal", src, e.t("ev.journal.auto.persistent"))
		} else {
			e.locationCheck(id, "/run/log/journal", "/run/log/journal", src, e.t("ev.journal.auto.volatile"))
		}
	}
}
