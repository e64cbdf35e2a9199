package blockstack

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseMountInfo(t *testing.T) {
	tests := []struct {
		name, in string
		want     []Mount
		wantErr  string
	}{
		{
			name: "proc(5) example",
			in:   "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n",
			want: []Mount{{ID: 36, ParentID: 35, Major: 98, Minor: 0, Root: "/mnt1", MountPoint: "/mnt2",
				Options: "rw,noatime", Optional: "master:1", FSType: "ext3", Source: "/dev/root", SuperOpts: "rw,errors=continue"}},
		},
		{
			name: "escaped space and no optional fields",
			in:   "40 27 253:3 / /srv/mail\\040store rw,relatime - ext4 /dev/mapper/vg0-mail rw\n",
			want: []Mount{{ID: 40, ParentID: 27, Major: 253, Minor: 3, Root: "/", MountPoint: "/srv/mail store",
				Options: "rw,relatime", FSType: "ext4", Source: "/dev/mapper/vg0-mail", SuperOpts: "rw"}},
		},
		{
			name: "several optional fields, blank line",
			in:   "\n41 27 0:50 / /tmp rw shared:5 master:2 propagate_from:1 - tmpfs tmpfs rw,size=100k\n",
			want: []Mount{{ID: 41, ParentID: 27, Major: 0, Minor: 50, Root: "/", MountPoint: "/tmp", Options: "rw",
				Optional: "shared:5 master:2 propagate_from:1", FSType: "tmpfs", Source: "tmpfs", SuperOpts: "rw,size=100k"}},
		},
		{name: "no separator", in: "1 2 3:4 / / rw ext4 /dev/x rw\n", wantErr: "separator"},
		{name: "bad majmin", in: "1 2 34 / / rw - ext4 /dev/x rw\n", wantErr: "major:minor"},
		{name: "bad id", in: "x 2 3:4 / / rw - ext4 /dev/x rw\n", wantErr: "mount id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMountInfo(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestMountOption(t *testing.T) {
	m := Mount{SuperOpts: `rw,lowerdir=/a\,b:/c,upperdir=/var/lib/ov/up,workdir=/var/lib/ov/work`}
	if got, ok := m.Option("upperdir"); !ok || got != "/var/lib/ov/up" {
		t.Errorf("upperdir: got %q %v, want /var/lib/ov/up", got, ok)
	}
	if got, _ := m.Option("lowerdir"); got != "/a,b:/c" {
		t.Errorf("lowerdir: got %q, want %q", got, "/a,b:/c")
	}
	if _, ok := m.Option("nope"); ok {
		t.Error("nope: got present, want absent")
	}
}

func TestUnescape(t *testing.T) {
	tests := []struct{ in, want string }{
		{`/a\040b`, "/a b"}, {`/a\011b`, "/a\tb"}, {`/a\134b`, `/a\b`}, {`/a\b`, `/a\b`}, {`/a\9`, `/a\9`}, {`\04`, `\04`},
	}
	for _, tt := range tests {
		if got := Unescape(tt.in); got != tt.want {
			t.Errorf("Unescape(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzParseMountInfo(f *testing.F) {
	f.Add("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n")
	f.Add("22 27 0:21 / /proc rw,relatime - proc proc rw\n27 1 254:0 / / rw - ext4 /dev/vda rw\n")
	f.Add("1 1 1:1 /\\040 / rw - overlay overlay rw,upperdir=/u\\,x\n")
	f.Fuzz(func(t *testing.T, in string) {
		ms, err := ParseMountInfo(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, m := range ms {
			_ = m.MajMin()
			_, _ = m.Option("upperdir")
		}
	})
}
