package verify

import (
	"path"
	"sort"
	"strings"

	"github.com/cryptshift/cryptshift/internal/hostview/sysconf"
)

// mail.postfix.*: the queue holds every message in transit; the spool
// (local delivery) every mailbox. With multi-instance Postfix
// (postmulti(1)) every instance listed in multi_instance_directories has
// its own main.cf and its own queue.
func checkPostfix(e *env) {
	s, ok := e.read("/etc/postfix/main.cf")
	if !ok {
		e.naIfAbsent("mail.postfix.queue", "postfix", "/etc/postfix/main.cf")
		e.naIfAbsent("mail.postfix.spool", "postfix", "/etc/postfix/main.cf")
		return
	}
	c, _ := sysconf.ParsePostfixMainCF(strings.NewReader(s))
	e.postfixInstance("/etc/postfix/main.cf", c)
	for _, dir := range strings.FieldsFunc(c.Get("multi_instance_directories"), func(r rune) bool { return r == ' ' || r == ',' || r == '\t' }) {
		f := path.Join(dir, "main.cf")
		e.inputs[f] = "postfix-main.cf"
		t, ok := e.read(f)
		if !ok {
			e.skip("mail.postfix.queue", dir, "/etc/postfix/main.cf: multi_instance_directories: "+e.t("ev.notcaptured", f))
			continue
		}
		ic, _ := sysconf.ParsePostfixMainCF(strings.NewReader(t))
		e.postfixInstance(f, ic)
	}
}

func (e *env) postfixInstance(file string, c sysconf.PostfixConfig) {
	q := c.Get("queue_directory")
	e.locationCheck("mail.postfix.queue", q, q, file+": queue_directory = "+q)
	if hm := c.Get("home_mailbox"); hm != "" {
		// Local delivery into $HOME/<home_mailbox> instead of the spool.
		if why := e.homesUnknown(); why != "" {
			e.skip("mail.postfix.spool", "~/"+hm, file+": home_mailbox = "+hm, why)
		}
		for _, h := range e.homes() {
			p := path.Join(h, hm)
			e.locationCheck("mail.postfix.spool", p, p, file+": home_mailbox = "+hm)
		}
	} else {
		sp := c.Get("mail_spool_directory")
		e.locationCheck("mail.postfix.spool", sp, sp, file+": mail_spool_directory = "+sp)
	}
	if vb := c.Get("virtual_mailbox_base"); vb != "" {
		e.locationCheck("mail.postfix.spool", vb, vb, file+": virtual_mailbox_base = "+vb)
	}
}

// dovecotHomes says what "~" is in Dovecot's paths: the home directory the
// userdb returns for each user (doc.dovecot.org, "Home directories"), not
// /etc/passwd unless the userdb is the passwd driver. Each home comes with
// where it was found; a userdb whose homes cannot be read from files (sql,
// ldap, ...) is returned in unknown; homes that are not in the tree
// (a passwd userdb without /etc/passwd) in missing.
func (e *env) dovecotHomes(c *sysconf.DovecotConfig) (homes []place, unknown, missing []string) {
	type userdb struct {
		driver, args, fields, file string
	}
	dbs := map[string]*userdb{}
	var order []string
	for _, s := range c.Settings {
		sec := s.Section
		if !strings.HasPrefix(sec, "userdb") {
			continue
		}
		name, _, _ := strings.Cut(sec, "/")
		db := dbs[name]
		if db == nil {
			db = &userdb{file: s.File}
			if _, n, ok := strings.Cut(name, " "); ok {
				db.driver = n // Dovecot 2.4: "userdb passwd-file { ... }"
			}
			dbs[name] = db
			order = append(order, name)
		}
		switch {
		case s.Key == "driver":
			db.driver = s.Value
		case s.Key == "args" || s.Key == "passwd_file_path":
			db.args = s.Value
		case s.Key == "default_fields" || s.Key == "override_fields":
			db.fields += " " + s.Value
		case strings.HasSuffix(sec, "/fields") && s.Key == "home":
			db.fields += " home=" + s.Value
		}
	}
	addHome := func(tmpl, src string) {
		if sp, ok := sysconf.StaticPrefix(tmpl); ok {
			homes = append(homes, place{sp, src})
		}
	}
	for _, name := range order {
		db := dbs[name]
		src := db.file + ": " + name + " { driver = " + db.driver + " }"
		fieldHome := fieldValue(db.fields, "home")
		switch db.driver {
		case "passwd":
			if why := e.homesUnknown(); why != "" {
				missing = append(missing, src+": "+why)
			}
			for _, h := range e.homes() {
				homes = append(homes, place{h, src + " (/etc/passwd)"})
			}
		case "static":
			if h := fieldValue(db.args, "home"); h != "" {
				addHome(h, src+" args home="+h)
			} else if fieldHome != "" {
				addHome(fieldHome, src+" home="+fieldHome)
			} else {
				unknown = append(unknown, src+": "+e.t("ev.dovecot.nohome"))
			}
		case "passwd-file":
			f := lastPlain(db.args)
			if f == "" || strings.Contains(f, "%") {
				if fieldHome != "" {
					addHome(fieldHome, src+" home="+fieldHome)
				} else {
					unknown = append(unknown, src+": "+f)
				}
				continue
			}
			e.inputs[f] = "passwd-file"
			b, ok := e.read(f)
			if !ok {
				unknown = append(unknown, src+": "+e.t("ev.notcaptured", f))
				continue
			}
			for i, l := range strings.Split(b, "\n") {
				fs := strings.Split(l, ":")
				if len(fs) < 1 || strings.TrimSpace(fs[0]) == "" || strings.HasPrefix(strings.TrimSpace(l), "#") {
					continue
				}
				h := ""
				if len(fs) > 5 {
					h = fs[5]
				}
				if len(fs) > 7 {
					if v := fieldValue(strings.Join(fs[7:], ":"), "userdb_home"); v != "" {
						h = v
					}
				}
				if h == "" {
					h = fieldHome
				}
				if h != "" {
					addHome(h, e.line(f, i+1)+" ("+src+")")
				}
			}
		default:
			if fieldHome != "" {
				addHome(fieldHome, src+" home="+fieldHome)
				continue
			}
			unknown = append(unknown, src+": "+e.t("ev.dovecot.dbhome", db.driver))
		}
	}
	if v, ok := c.Get("mail_home"); ok && v != "" {
		addHome(v, "mail_home = "+v)
	}
	if len(order) == 0 && len(homes) == 0 {
		// No userdb configured here (Debian's auth-system.conf.ext, when
		// included, uses passwd): the system accounts.
		if why := e.homesUnknown(); why != "" {
			missing = append(missing, "userdb passwd ("+e.t("ev.default")+"): "+why)
		}
		for _, h := range e.homes() {
			homes = append(homes, place{h, "userdb passwd (" + e.t("ev.default") + ")"})
		}
	}
	return homes, unknown, missing
}

// fieldValue finds key=value in a space-separated Dovecot args or fields string.
func fieldValue(s, key string) string {
	v := ""
	for _, f := range strings.Fields(s) {
		if x, ok := strings.CutPrefix(f, key+"="); ok {
			v = x
		}
	}
	return v
}

// lastPlain returns the last word of args without "=": a passwd-file path.
func lastPlain(args string) string {
	f := strings.Fields(args)
	for i := len(f) - 1; i >= 0; i-- {
		if !strings.Contains(f[i], "=") {
			return f[i]
		}
	}
	return ""
}

type place struct{ p, src string }

// mail.dovecot.*: mailboxes and their indexes (which hold headers and,
// with FTS, message text).
func checkDovecot(e *env) {
	if !e.exists("/etc/dovecot/dovecot.conf") {
		e.naIfAbsent("mail.dovecot.location", "dovecot", "/etc/dovecot/dovecot.conf")
		e.naIfAbsent("mail.dovecot.index", "dovecot", "/etc/dovecot/dovecot.conf")
		return
	}
	c, err := sysconf.ReadDovecotConfig(e.fs, "/etc/dovecot/dovecot.conf")
	if err != nil {
		e.skip("mail.dovecot.location", "dovecot", err.Error())
		e.skip("mail.dovecot.index", "dovecot", err.Error())
		return
	}
	var mail, index []place
	homes, unknownHomes, missingHomes := e.dovecotHomes(c)
	configured := false // a mailbox path is set: Dovecot's defaults do not apply
	addPath := func(dst *[]place, p, src string) {
		if p == "" {
			return
		}
		if dst == &mail {
			configured = true
		}
		if strings.HasPrefix(p, "~") {
			for _, m := range missingHomes {
				e.skip("mail.dovecot.location", p, src, "~: "+m)
			}
			for _, h := range homes {
				*dst = append(*dst, place{path.Join(h.p, strings.TrimPrefix(p, "~")), src + " (~ = " + h.p + ": " + h.src + ")"})
			}
			for _, u := range unknownHomes {
				e.add("mail.dovecot.location", Warn, p, src, "~: "+u)
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
	if len(mail) == 0 && !configured {
		// Dovecot's default: autodetection, which finds ~/Maildir, ~/mail
		// or the mbox spool /var/mail/%u (doc.dovecot.org, mail_location).
		addPath(&mail, "/var/mail", "dovecot: mail_location "+e.t("ev.default")+" ("+e.t("ev.dovecot.autodetect")+")")
		addPath(&mail, "~/Maildir", "dovecot: mail_location "+e.t("ev.default")+" ("+e.t("ev.dovecot.autodetect")+")")
	}
	if len(mail) == 0 && configured && !e.has("mail.dovecot.location") {
		// Set, but to nothing verify can place (a template without a fixed
		// prefix): the defaults do not apply either.
		e.skip("mail.dovecot.location", "dovecot", e.t("ev.dovecot.noplace"))
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
			e.na("mail.filters", "amavis, rspamd, spamassassin", e.t("ev.absent.all", e.list([]string{"/etc/amavis", "/etc/rspamd", "/etc/spamassassin"})))
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
