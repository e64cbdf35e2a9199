package verify

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

const MiB = 1 << 20

type imgPart struct {
	sizeMiB uint64
	name    string
	guid    string
	ext4    map[string]string // path (no leading "/") -> contents; "->target" makes a symlink
	raw     []byte            // written at the partition start when ext4 is nil
}

// makeImage writes a GPT raw image with go-diskfs, the way a guest installer
// would lay it out.
func makeImage(t *testing.T, parts []imgPart) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "guest.raw")
	var total uint64 = 2
	for _, pt := range parts {
		total += pt.sizeMiB
	}
	d, err := diskfs.Create(p, int64((total+1)*MiB), diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	tbl := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true}
	start := uint64(2048)
	for i, pt := range parts {
		end := start + pt.sizeMiB*MiB/512 - 1
		tbl.Partitions = append(tbl.Partitions, &gpt.Partition{Index: i + 1, Start: start, End: end, Type: gpt.LinuxFilesystem, Name: pt.name, GUID: pt.guid})
		start = end + 1
	}
	if err := d.Partition(tbl); err != nil {
		t.Fatal(err)
	}
	for i, pt := range parts {
		if pt.ext4 == nil {
			if pt.raw != nil {
				full := make([]byte, pt.sizeMiB*MiB) // go-diskfs writes whole partitions
				copy(full, pt.raw)
				if _, err := d.WritePartitionContents(i+1, bytes.NewReader(full)); err != nil {
					t.Fatal(err)
				}
			}
			continue
		}
		fsys, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: i + 1, FSType: filesystem.TypeExt4, VolumeLabel: pt.name})
		if err != nil {
			t.Fatal(err)
		}
		writeExt4(t, fsys, pt.ext4)
	}
	d.Close()
	return p
}

func writeExt4(t *testing.T, fsys filesystem.FileSystem, files map[string]string) {
	t.Helper()
	mkdirs := func(p string) {
		dir := filepath.Dir(p)
		if dir != "." {
			if err := fsys.Mkdir(dir); err != nil {
				t.Fatal(err)
			}
		}
	}
	for p, c := range files {
		mkdirs(p)
		if target, ok := strings.CutPrefix(c, "->"); ok {
			if err := fsys.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if strings.HasSuffix(p, "/") {
			if err := fsys.Mkdir(strings.TrimSuffix(p, "/")); err != nil {
				t.Fatal(err)
			}
			continue
		}
		f, err := fsys.OpenFile(p, os.O_CREATE|os.O_RDWR)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte(c)); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}

func luks2Header(t *testing.T) []byte {
	t.Helper()
	f, err := os.Open("../../../luks/testdata/luks2.hdr.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVerifyImage(t *testing.T) {
	swapSig := make([]byte, 4096)
	copy(swapSig[4086:], "SWAPSPACE2")
	tests := []struct {
		name  string
		parts []imgPart
		want  []want
	}{
		{
			name: "plaintext guest",
			parts: []imgPart{
				{sizeMiB: 48, name: "root", guid: "5a1b2c3d-0000-4000-8000-000000000001", ext4: map[string]string{
					"etc/fstab":           "/dev/vda1 / ext4 errors=remount-ro 0 1\nPARTUUID=5a1b2c3d-0000-4000-8000-000000000002 none swap sw 0 0\n/swapfile none swap sw 0 0\n",
					"etc/postfix/main.cf": "queue_directory = /var/spool/postfix\n",
					"etc/passwd":          "root:x:0:0:root:/root:/bin/bash\n",
					"var/spool/postfix/":  "",
					"var/mail":            "->spool/mail",
					"var/spool/mail/":     "",
					"swapfile":            "",
				}},
				{sizeMiB: 8, name: "swap", guid: "5a1b2c3d-0000-4000-8000-000000000002", raw: swapSig},
			},
			want: []want{
				{"swap.fstab", "PARTUUID=5a1b2c3d-0000-4000-8000-000000000002", Fail}, {"swap.fstab", "/swapfile", Fail},
				{"tmp.tmp", "", Fail}, {"mail.postfix.queue", "", Fail}, {"image.partitions", "partition 2", Warn},
			},
		},
		{
			name: "guest encrypting its mail and swap",
			parts: []imgPart{
				{sizeMiB: 48, name: "root", guid: "6a1b2c3d-0000-4000-8000-000000000001", ext4: map[string]string{
					"etc/fstab": "LABEL=root / ext4 defaults 0 1\n/dev/mapper/mail_crypt /srv/mail ext4 defaults 0 2\n" +
						"/dev/mapper/swap_crypt none swap sw 0 0\n",
					"etc/crypttab": "mail_crypt UUID=11111111-2222-4333-8444-555555555555 /etc/keys/mail.key luks\n" +
						"swap_crypt PARTUUID=6a1b2c3d-0000-4000-8000-000000000003 /dev/urandom swap,cipher=aes-xts-plain64,size=512\n",
					"etc/keys/mail.key":                                  "",
					"etc/dovecot/dovecot.conf":                           "mail_location = maildir:/srv/mail/%d/%n\n",
					"etc/systemd/system/local-fs.target.wants/tmp.mount": "->/usr/lib/systemd/system/tmp.mount",
					"srv/mail/": "",
				}},
				{sizeMiB: 20, name: "mail", guid: "6a1b2c3d-0000-4000-8000-000000000002", raw: luks2Header(t)},
				{sizeMiB: 8, name: "swap", guid: "6a1b2c3d-0000-4000-8000-000000000003"},
			},
			want: []want{
				{"swap.fstab", "", Pass}, {"tmp.tmp", "", Pass}, {"mail.dovecot.location", "/srv/mail", Pass},
				{"image.partitions", "partition 2", Pass}, {"swap.crypttab", "swap_crypt", Pass},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := makeImage(t, tt.parts)
			r, err := Run(Options{Image: img, Version: "test", Date: "2026-11-22"})
			if err != nil {
				t.Fatal(err)
			}
			if r.Header.Source != "image" {
				t.Errorf("source %q, want image", r.Header.Source)
			}
			for _, c := range r.Checks {
				if c.ID == "swap.device" || c.ID == "luks.header" || c.ID == "lvm.leftover" {
					t.Errorf("live-only check %s ran on an image", c.ID)
				}
			}
			checkWants(t, r, fixture{want: tt.want})
			if t.Failed() || testing.Verbose() {
				var b bytes.Buffer
				Render(&b, r, "text")
				t.Log(b.String())
			}
		})
	}
}
