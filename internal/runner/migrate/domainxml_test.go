package migrate

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/libvirt"
)

// TestDryRunFromDomainXML: a dry-run planned from a saved definition
// (--domain-xml) of a domain libvirtd does not know gives the same steps
// as the one planned from libvirtd, plus a note that the state was not
// checked; it changes nothing. Without a daemon, what only libvirtd knows
// (a pool) is refused naming libvirtd; a definition of another domain, or
// --domain-xml without --dry-run, is a usage error.
func TestDryRunFromDomainXML(t *testing.T) {
	f := newFixture(t, libvirt.ShutOff, ModeOffline)
	f.opts.DryRun = true
	want, err := Run(context.Background(), f.opts)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := f.hv.doms["mail"].inactive.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(f.dir, "mail.xml")
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	delete(f.hv.doms, "mail") // libvirtd knows the pool, not the domain
	o := f.opts
	o.DomainXML = file
	o.Rand = &seqReader{} // the same secret UUIDs as the first run
	got, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Plan.Steps) != len(want.Plan.Steps) {
		t.Fatalf("%d steps from the XML, %d from libvirtd", len(got.Plan.Steps), len(want.Plan.Steps))
	}
	for i := range want.Plan.Steps {
		if got.Plan.Steps[i].ID != want.Plan.Steps[i].ID || strings.Join(got.Plan.Steps[i].Command, " ") != strings.Join(want.Plan.Steps[i].Command, " ") {
			t.Errorf("step %d: %s %q, want %s %q", i, got.Plan.Steps[i].ID, got.Plan.Steps[i].Command, want.Plan.Steps[i].ID, want.Plan.Steps[i].Command)
		}
	}
	if n := got.Plan.Notes; len(n) != len(want.Plan.Notes)+1 || !strings.Contains(n[len(n)-1], "not from libvirtd") {
		t.Errorf("no note on what the definition cannot tell: %q", n)
	}
	if m := f.hv.mutations(); len(m) != 0 {
		t.Errorf("dry-run changed something: %v", m)
	}

	// No daemon: the pool cannot be read.
	o.Hypervisor = nil
	o.Connect = filepath.Join(f.dir, "no-such-socket")
	if _, err := Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), "libvirtd is not reachable") {
		t.Errorf("pool target without libvirtd: %v", err)
	}

	for name, adjust := range map[string]func(o *Options){
		"another domain": func(o *Options) { o.Domain = "web" },
		"not a dry-run":  func(o *Options) { o.DryRun = false },
		"missing file":   func(o *Options) { o.DomainXML = filepath.Join(f.dir, "none.xml") },
	} {
		bad := f.opts
		bad.DomainXML = file
		adjust(&bad)
		if _, err := Run(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "domain-xml") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
