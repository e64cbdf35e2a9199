// Package lvm drives LVM through the lvm(8) tool, the one door cryptshift
// uses for it. Reads always use --reportformat json with exact byte units.
package lvm

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
)

// LVM wraps an execx.Runner.
type LVM struct {
	Run execx.Runner
	// Config is passed as --config to every command (e.g. to run without
	// udev inside a minimal VM); empty for the system's own lvm.conf.
	Config string
}

// Exec runs one lvm subcommand.
func (l LVM) Exec(ctx context.Context, args ...string) (execx.Result, error) {
	full := append([]string{args[0]}, l.configArgs()...)
	full = append(full, args[1:]...)
	return l.Run.Run(ctx, execx.Cmd{Tool: "lvm", Args: full})
}

func (l LVM) configArgs() []string {
	if l.Config == "" {
		return nil
	}
	return []string{"--config", l.Config}
}

// PV is one row of "lvm pvs".
type PV struct {
	Name string
	VG   string
	UUID string
	Size int64
	Free int64
}

// VG is one row of "lvm vgs".
type VG struct {
	Name        string
	UUID        string
	Size        int64
	Free        int64
	ExtentSize  int64
	ExtentCount int64
	FreeCount   int64
}

// LV is one row of "lvm lvs".
type LV struct {
	VG     string
	Name   string
	Path   string // /dev/VG/LV
	DMPath string // /dev/mapper/VG-LV
	UUID   string
	Size   int64
	Active bool
	Origin string
}

// report runs a reporting command and returns its rows as string maps.
// lvm's JSON report is {"report":[{"pv":[{...}]}]} with every value a string.
func (l LVM) report(ctx context.Context, cmd, key, fields string) ([]map[string]string, error) {
	res, err := l.Exec(ctx, cmd, "--reportformat", "json", "--units", "b", "--nosuffix", "-o", fields)
	if err != nil {
		return nil, err
	}
	return parseReport(res.Stdout, key)
}

func parseReport(b []byte, key string) ([]map[string]string, error) {
	var doc struct {
		Report []map[string][]map[string]string `json:"report"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("cannot read lvm report: %w", err)
	}
	var rows []map[string]string
	for _, r := range doc.Report {
		rows = append(rows, r[key]...)
	}
	return rows, nil
}

func num(s string) int64 {
	n, _ := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	return n
}

// PVs lists physical volumes.
func (l LVM) PVs(ctx context.Context) ([]PV, error) {
	rows, err := l.report(ctx, "pvs", "pv", "pv_name,vg_name,pv_uuid,pv_size,pv_free")
	if err != nil {
		return nil, err
	}
	out := make([]PV, 0, len(rows))
	for _, r := range rows {
		out = append(out, PV{Name: r["pv_name"], VG: r["vg_name"], UUID: r["pv_uuid"], Size: num(r["pv_size"]), Free: num(r["pv_free"])})
	}
	return out, nil
}

// VGs lists volume groups.
func (l LVM) VGs(ctx context.Context) ([]VG, error) {
	rows, err := l.report(ctx, "vgs", "vg", "vg_name,vg_uuid,vg_size,vg_free,vg_extent_size,vg_extent_count,vg_free_count")
	if err != nil {
		return nil, err
	}
	out := make([]VG, 0, len(rows))
	for _, r := range rows {
		out = append(out, VG{Name: r["vg_name"], UUID: r["vg_uuid"], Size: num(r["vg_size"]), Free: num(r["vg_free"]),
			ExtentSize: num(r["vg_extent_size"]), ExtentCount: num(r["vg_extent_count"]), FreeCount: num(r["vg_free_count"])})
	}
	return out, nil
}

// LVs lists logical volumes.
func (l LVM) LVs(ctx context.Context) ([]LV, error) {
	rows, err := l.report(ctx, "lvs", "lv", "vg_name,lv_name,lv_path,lv_dm_path,lv_uuid,lv_size,lv_active,origin")
	if err != nil {
		return nil, err
	}
	out := make([]LV, 0, len(rows))
	for _, r := range rows {
		out = append(out, LV{VG: r["vg_name"], Name: r["lv_name"], Path: r["lv_path"], DMPath: r["lv_dm_path"], UUID: r["lv_uuid"],
			Size: num(r["lv_size"]), Active: r["lv_active"] == "active", Origin: r["origin"]})
	}
	return out, nil
}

// Op is an lvm invocation rendered from typed parameters: the one place
// its command line is spelled, for plans, scripts and execution. Args
// starts with the subcommand; Argv adds the tool.
type Op interface {
	Args() []string
}

// Argv is op's command line as a plan shows it.
func Argv(op Op) []string { return append([]string{"lvm"}, op.Args()...) }

// Do runs op (with Config, if set).
func (l LVM) Do(ctx context.Context, op Op) error {
	_, err := l.Exec(ctx, op.Args()...)
	return err
}

// PVCreate makes Device a physical volume.
type PVCreate struct {
	Device string `json:"device"`
}

func (o PVCreate) Args() []string { return []string{"pvcreate", o.Device} }

// VGCreate makes a volume group of PVs with extents of ExtentSize bytes.
type VGCreate struct {
	VG         string   `json:"vg"`
	ExtentSize int64    `json:"extentSize"`
	PVs        []string `json:"pvs"`
}

func (o VGCreate) Args() []string {
	return append([]string{"vgcreate", "--physicalextentsize", fmt.Sprintf("%dk", o.ExtentSize/1024), o.VG}, o.PVs...)
}

// VGExtend adds PVs to a volume group.
type VGExtend struct {
	VG  string   `json:"vg"`
	PVs []string `json:"pvs"`
}

func (o VGExtend) Args() []string { return append([]string{"vgextend", o.VG}, o.PVs...) }

// VGReduce takes PVs out of a volume group.
type VGReduce struct {
	VG  string   `json:"vg"`
	PVs []string `json:"pvs"`
}

func (o VGReduce) Args() []string { return append([]string{"vgreduce", o.VG}, o.PVs...) }

// VGRemove removes an (empty) volume group.
type VGRemove struct {
	VG string `json:"vg"`
}

func (o VGRemove) Args() []string { return []string{"vgremove", o.VG} }

// LVCreate makes a logical volume of exactly Extents extents.
// --wipesignatures/--zero clear whatever an earlier LV left at its start,
// so nothing there is mistaken for a header or a filesystem.
type LVCreate struct {
	VG      string `json:"vg"`
	Name    string `json:"name"`
	Extents int64  `json:"extents"`
}

func (o LVCreate) Args() []string {
	return []string{"lvcreate", "--yes", "--wipesignatures", "y", "--zero", "y",
		"--name", o.Name, "--extents", strconv.FormatInt(o.Extents, 10), o.VG}
}

// LVExtend grows a logical volume to Extents extents.
type LVExtend struct {
	VG      string `json:"vg"`
	Name    string `json:"name"`
	Extents int64  `json:"extents"`
}

func (o LVExtend) Args() []string {
	return []string{"lvextend", "--extents", strconv.FormatInt(o.Extents, 10), o.VG + "/" + o.Name}
}

// LVRemove removes a logical volume.
type LVRemove struct {
	VG   string `json:"vg"`
	Name string `json:"name"`
}

func (o LVRemove) Args() []string { return []string{"lvremove", "--yes", o.VG + "/" + o.Name} }

// VGActivate activates every logical volume of a volume group, as boot
// does; after a reboot that left VG inactive its LVs exist but have no
// device nodes.
type VGActivate struct {
	VG string `json:"vg"`
}

func (o VGActivate) Args() []string { return []string{"vgchange", "--activate", "y", o.VG} }

// LVActivate activates a logical volume.
type LVActivate struct {
	VG   string `json:"vg"`
	Name string `json:"name"`
}

func (o LVActivate) Args() []string {
	return []string{"lvchange", "--activate", "y", o.VG + "/" + o.Name}
}
