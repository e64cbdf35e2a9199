package lvm

import (
	"context"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
)

// Output captured from lvm 2.03.16 (Debian 12) on loop devices.
const lvsJSON = `  {
      "report": [
          {
              "lv": [
                  {"vg_name":"vg0", "lv_name":"root", "lv_path":"/dev/vg0/root", "lv_dm_path":"/dev/mapper/vg0-root", "lv_uuid":"Jc2b1Q-8s5C-9kLm-0pQr-ABcD-efGh-IJklMN", "lv_size":"524288000", "lv_active":"active", "origin":""},
                  {"vg_name":"vg0", "lv_name":"snap", "lv_path":"/dev/vg0/snap", "lv_dm_path":"/dev/mapper/vg0-snap", "lv_uuid":"x", "lv_size":"4194304", "lv_active":"", "origin":"root"}
              ]
          }
      ]
  }
`

func TestLVsParsesTheJSONReport(t *testing.T) {
	rec := &execx.Recorder{Responses: map[string]execx.Result{"lvm lvs": {Stdout: []byte(lvsJSON)}}}
	l := LVM{Run: rec, Config: "devices{obtain_device_list_from_udev=0}"}
	lvs, err := l.LVs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(lvs) != 2 || lvs[0].Size != 524288000 || !lvs[0].Active || lvs[1].Active || lvs[1].Origin != "root" || lvs[0].DMPath != "/dev/mapper/vg0-root" {
		t.Fatalf("got %+v", lvs)
	}
	want := "lvm lvs --config 'devices{obtain_device_list_from_udev=0}' --reportformat json --units b --nosuffix -o vg_name,lv_name,lv_path,lv_dm_path,lv_uuid,lv_size,lv_active,origin"
	if got := rec.Lines()[0]; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestReportErrorIsClear(t *testing.T) {
	_, err := parseReport([]byte("  WARNING: Failed to connect to lvmetad"), "pv")
	if err == nil || !strings.Contains(err.Error(), "cannot read lvm report") {
		t.Fatalf("got %v", err)
	}
}

// Every write operation is rendered in one place, and runs with the
// --config a minimal system needs right after its subcommand.
func TestOpsRenderAndRun(t *testing.T) {
	for _, tt := range []struct {
		op   Op
		want string
	}{
		{PVCreate{Device: "/dev/sda2"}, "lvm pvcreate /dev/sda2"},
		{VGCreate{VG: "vg0", ExtentSize: 4 << 20, PVs: []string{"/dev/sda2", "/dev/sdb"}}, "lvm vgcreate --physicalextentsize 4096k vg0 /dev/sda2 /dev/sdb"},
		{VGExtend{VG: "vg0", PVs: []string{"/dev/sdc"}}, "lvm vgextend vg0 /dev/sdc"},
		{VGReduce{VG: "vg0", PVs: []string{"/dev/sdc"}}, "lvm vgreduce vg0 /dev/sdc"},
		{VGRemove{VG: "vg0"}, "lvm vgremove vg0"},
		{LVCreate{VG: "vg0", Name: "root", Extents: 2559}, "lvm lvcreate --yes --wipesignatures y --zero y --name root --extents 2559 vg0"},
		{LVExtend{VG: "vg0", Name: "root", Extents: 3000}, "lvm lvextend --extents 3000 vg0/root"},
		{LVRemove{VG: "vg0", Name: "root"}, "lvm lvremove --yes vg0/root"},
		{LVActivate{VG: "vg0", Name: "root"}, "lvm lvchange --activate y vg0/root"},
		{VGActivate{VG: "vg0"}, "lvm vgchange --activate y vg0"},
	} {
		if got := strings.Join(Argv(tt.op), " "); got != tt.want {
			t.Errorf("%T:\ngot  %s\nwant %s", tt.op, got, tt.want)
		}
	}
	rec := &execx.Recorder{}
	if err := (LVM{Run: rec, Config: "x{y=0}"}).Do(context.Background(), LVRemove{VG: "vg0", Name: "a"}); err != nil {
		t.Fatal(err)
	}
	if got := rec.Lines()[0]; got != "lvm lvremove --config 'x{y=0}' --yes vg0/a" {
		t.Errorf("got %s", got)
	}
}
