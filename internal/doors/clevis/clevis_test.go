package clevis

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// testdata/adv.json is a real advertisement of tangd (tangd-keygen, then
// GET /adv); jose jwk thp -a S256 of its signing key printed advThp.
const advThp = "voU6475c-6TIakg7U7LoBHrS9ESNwU98S-1Gr2IDA2k"

func TestSigningThumbprintsMatchJose(t *testing.T) {
	adv, err := os.ReadFile("testdata/adv.json")
	if err != nil {
		t.Fatal(err)
	}
	got, err := SigningThumbprints(adv)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != advThp {
		t.Fatalf("got %q, want [%s]", got, advThp)
	}
	for _, bad := range []string{``, `{}`, `{"payload":"!!"}`, `{"payload":"e30"}`, `[1]`} {
		if _, err := SigningThumbprints([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestCheckTang(t *testing.T) {
	adv, err := os.ReadFile("testdata/adv.json")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/adv" {
			http.NotFound(w, r)
			return
		}
		w.Write(adv)
	}))
	defer srv.Close()
	ctx := context.Background()
	if err := CheckTang(ctx, nil, srv.URL, advThp); err != nil {
		t.Fatalf("the pinned server: %v", err)
	}
	if err := CheckTang(ctx, nil, srv.URL, "AAAA"); err == nil || !strings.Contains(err.Error(), "does not advertise the pinned thumbprint") {
		t.Errorf("a thumbprint mismatch: %v", err)
	}
	// A port nothing listens on: refused at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	if err := CheckTang(ctx, nil, closed, advThp); err == nil || !strings.Contains(err.Error(), "cannot reach tang server") {
		t.Errorf("an unreachable server: %v", err)
	}
	if err := CheckTang(ctx, nil, "ftp://x", advThp); err == nil {
		t.Error("a non-http URL was accepted")
	}
}

func TestCommandLines(t *testing.T) {
	pass := []byte("the passphrase")
	c := Bind{Device: "/dev/mapper/vg0-root", Pin: Tang("http://10.0.2.100:7500", advThp)}.Cmd(pass)
	want := `clevis luks bind -y -d /dev/mapper/vg0-root -k - tang '{"thp":"` + advThp + `","url":"http://10.0.2.100:7500"}'`
	if got := c.String(); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if strings.Contains(c.String(), string(pass)) || string(c.Stdin) != string(pass) {
		t.Error("the passphrase must go on stdin only")
	}
	c = Bind{Device: "/dev/vda3", Pin: TPM2("sha256", "7")}.Cmd(pass)
	if got, want := c.String(), `clevis luks bind -y -d /dev/vda3 -k - tpm2 '{"pcr_bank":"sha256","pcr_ids":"7"}'`; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if got, want := (Unbind{Device: "/dev/vda3", Slot: 2}).Cmd().String(), "clevis luks unbind -f -d /dev/vda3 -s 2"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
