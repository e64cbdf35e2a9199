package verify

import (
	"path"
	"sort"
	"strings"

	"github.com/cryptshift/cryptshift/internal/hostview/sysconf"
)

func init() { register(false, checkPostfix, checkDovecot, checkFilters) }

// mail.postfix.*: the queue holds every message in transit; the spool
// (local delivery) every mailbox.
func checkPostfix(e *env) {
	s, ok := e.read("/etc/postfix/main.cf")
	if !ok {
		e.naIfAbsent("mail.postfix.queue", "postfix", "/etc/postfix/main.cf")
		return
	}
	c, _ := sysconf.ParsePostfixMainCF(strings.NewReader(s))
	q := c.Get("queue_directory")
	e.locationCheck("mail.postfix.queue", q, q, "/etc/postfix/main.cf: queue_directory = "+q)
	if hm := c.Get("home_mailbox"); hm != "" {
		// Local delivery into $HOME/<home_mailbox> instead of the spool.
		for _, h := range e.homes() {
			p := path.Join(h, hm)
			e.locationCheck("mail.postfix.spool", p, p, "/etc/postfix/main.cf: home_mailbox = "+hm)
		}
	} else {
		sp := c.Get("mail_spool_directory")
		e.locationCheck("mail.postfix.spool", sp, sp, "/etc/postfix/main.cf: mail_spool_directory = "+sp)
	}
	if vb := c.Get("virtual_mailbox_base"); vb != "" {
		e.locationCheck("mail.postfix.spool", vb, vb, "/etc/postfix/main.cf: virtual_mailbox_base = "+vb)
	}
}

// mail.dovecot.*: mailboxes and their indexes (which hold headers and,
// with FTS, message text).
func checkDovecot(e *env) {
	if !e.exists("/etc/dovecot/dovecot.conf") {
		e.naIfAbsent("mail.dovecot.location", "dovecot", "/etc/dovecot/dovecot.conf")
		return
	}
	c, err := sysconf.ReadDovecotConfig(e.fs, "/etc/dovecot/dovecot.conf")
	if err != nil {
		e.skip("mail.dovecot.location", "dovecot", err.Error())
		return
	}
	type place struct{ p, src string }
	var mail, index []place
	addPath := func(dst *[]place, p, src string) {
		if p == "" {
			return
		}
		if strings.HasPrefix(p, "~") {
			for _, h := range e.homes() {
				*dst = append(*dst, place{path.Join(h, strings.TrimPrefix(p, "~")), src + " (~ = " + h + ")"})
			}
			return
		}
		if sp, ok := sysconf.StaticPrefix(p); ok {
			*dst = append(*dst, place{sp, src})
		}
	}
	for _, s := range c.Settings {
		src := s.File + ": " + s.Key + " = " + s.Value
		if s.Section != "" {
			src = s.File + ": " + s.Section + " { " + s.Key + " = " + s.Value + " }"
		}
		switch s.Key {
		case "mail_location", "location": // Dovecot 2.3; namespaces have "location"
			if s.Key == "location" && !strings.HasPrefix(s.Section, "namespace") {
				continue
			}
			ml := sysconf.ParseMailLocation(s.Value)
			addPath(&mail, ml.Path, src)
			if v := ml.Params["INBOX"]; v != "" {
				addPath(&mail, v, src)
			}
			for _, k := range []string{"INDEX", "CONTROL", "INDEXPVT", "VOLATILEDIR"} {
				addPath(&index, ml.Params[k], src)
			}
		case "mail_path", "mail_inbox_path", "mail_home", "mail_attachment_dir": // Dovecot 2.4 and attachments
			addPath(&mail, s.Value, src)
		case "mail_index_path", "mail_control_path", "mail_index_private_path", "mail_volatile_path":
			addPath(&index, s.Value, src)
		}
	}
	if len(mail) == 0 {
		// Dovecot's default: autodetection, which finds ~/Maildir, ~/mail
		// or the mbox spool /var/mail/%u (doc.dovecot.org, mail_location).
		addPath(&mail, "/var/mail", "dovecot: mail_location "+e.t("ev.default")+" (autodetect)")
		addPath(&mail, "~/Maildir", "dovecot: mail_location "+e.t("ev.default")+" (autodetect)")
	}
	emit := func(id string, ps []place) {
		sort.SliceStable(ps, func(i, j int) bool { return ps[i].p < ps[j].p })
		seen := map[string]bool{}
		for _, p := range ps {
			if seen[p.p] {
				continue
			}
			seen[p.p] = true
			e.locationCheck(id, p.p, p.p, p.src)
		}
	}
	emit("mail.dovecot.location", mail)
	if len(index) == 0 {
		e.na("mail.dovecot.index", "dovecot", e.t("ev.dovecot.indexwithmail"))
	} else {
		emit("mail.dovecot.index", index)
	}
}

// mail.amavis / mail.rspamd / mail.spamassassin: content filters unpack
// every message (and its attachments) into their work directories, keep
// quarantined mail and learn Bayes tokens from message text.
func checkFilters(e *env) {
	n := 0
	if e.exists("/etc/amavis") {
		n++
		// Debian's 05-debian_defaults: $MYHOME = '/var/lib/amavis'; $TEMPBASE = "$MYHOME/tmp".
		tmp, home := "", "/var/lib/amavis"
		for _, f := range e.listFiles("/etc/amavis/conf.d", "") {
			s, _ := e.read(f)
			if v := perlAssign(s, "TEMPBASE"); v != "" {
				tmp = v
			}
			if v := perlAssign(s, "MYHOME"); v != "" {
				home = v
			}
		}
		if tmp == "" {
			tmp = path.Join(home, "tmp")
		}
		e.locationCheck("mail.amavis", tmp, tmp, "amavis $TEMPBASE")
		e.locationCheck("mail.amavis", path.Join(home, "virusmails"), path.Join(home, "virusmails"), "amavis $QUARANTINEDIR")
	}
	if e.exists("/etc/rspamd") {
		n++
		e.locationCheck("mail.rspamd", "/var/lib/rspamd", "/var/lib/rspamd", "rspamd $DBDIR")
	}
	if e.exists("/etc/spamassassin") {
		n++
		e.locationCheck("mail.spamassassin", "/var/lib/spamassassin", "/var/lib/spamassassin", "spamd bayes_path (Debian: debian-spamd home)")
	}
	if n == 0 {
		if e.absent("/etc/amavis") && e.absent("/etc/rspamd") && e.absent("/etc/spamassassin") {
			e.na("mail.filters", "amavis, rspamd, spamassassin", e.t("ev.absent", "/etc/amavis, /etc/rspamd, /etc/spamassassin"))
		} else {
			e.skip("mail.filters", "amavis, rspamd, spamassassin", e.t("ev.notcaptured", "/etc/amavis, /etc/rspamd, /etc/spamassassin"))
		}
	}
}

// perlAssign finds `$NAME = "value";` in amavis' Perl configuration.
func perlAssign(s, name string) string {
	v := ""
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "$"+name) {
			continue
		}
		_, rhs, ok := strings.Cut(l, "=")
		if !ok {
			continue
		}
		rhs = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rhs), ";"))
		rhs = strings.Trim(rhs, `"'`)
		if strings.HasPrefix(rhs, "/") {
			v = rhs
		}
	}
	return v
}
