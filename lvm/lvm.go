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
