package gpt

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/harness/testtier"
)

// The GPT go-diskfs writes is the one sfdisk reads back.
func TestHostPartitionImage(t *testing.T) {
	testtier.Host(t, "sfdisk")
	img := filepath.Join(t.TempDir(), "disk.img")
	os.WriteFile(img, nil, 0o600)
	os.Truncate(img, 64<<20)
	// stale data where partition 2 will start, to check --wipe-partitions
	f, _ := os.OpenFile(img, os.O_WRONLY, 0)
	f.WriteAt([]byte(strings.Repeat("OLD", 1000)), 17<<20)
	f.Close()
	rec := &execx.Recorder{}
	err := Write(context.Background(), rec, img, "5fc49146-841c-4e88-9437-6e1c0e2f7a11", []Partition{
		{Number: 1, Start: 1048576, Size: 16777216, Type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", Name: "esp", UUID: "0b6a3c0e-8d3b-4a56-9c1e-2f4a5b6c7d8e"},
		{Number: 2, Start: 17825792, Size: 46137344, Type: "E6D6D379-F507-44C2-A23C-238F2A3DF928", Name: "pv", UUID: "1b6a3c0e-8d3b-4a56-9c1e-2f4a5b6c7d8e"},
	}, true)
	if err != nil {
		t.Fatal(err)
	}
	if l := rec.Lines(); len(l) != 0 {
		t.Errorf("an image file has no partition nodes to settle, yet ran %q", l)
	}
	out, err := exec.Command("sfdisk", "--json", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		PT struct {
			Label      string `json:"label"`
			ID         string `json:"id"`
			Partitions []struct {
				Start, Size int64
				Type, UUID  string
				Name        string
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	json.Unmarshal(out, &got)
	if got.PT.Label != "gpt" || !strings.EqualFold(got.PT.ID, "5fc49146-841c-4e88-9437-6e1c0e2f7a11") || len(got.PT.Partitions) != 2 {
		t.Fatalf("sfdisk reads %s", out)
	}
	p2 := got.PT.Partitions[1]
	if p2.Start != 17825792/512 || p2.Size != 46137344/512 || p2.Name != "pv" || !strings.EqualFold(p2.Type, "E6D6D379-F507-44C2-A23C-238F2A3DF928") ||
		!strings.EqualFold(p2.UUID, "1b6a3c0e-8d3b-4a56-9c1e-2f4a5b6c7d8e") {
		t.Errorf("partition 2: %+v", p2)
	}
	b, _ := os.ReadFile(img)
	if strings.Contains(string(b[17<<20:18<<20]), "OLD") {
		t.Error("the old data at the start of partition 2 was not cleared")
	}
}

func TestNode(t *testing.T) {
	for disk, want := range map[string]string{
		"/dev/sda": "/dev/sda3", "/dev/nvme0n1": "/dev/nvme0n1p3", "/dev/loop0": "/dev/loop0p3",
		"/dev/disk/by-id/ata-X": "/dev/disk/by-id/ata-X-part3",
	} {
		if got := Node(disk, 3); got != want {
			t.Errorf("Node(%s, 3) = %s, want %s", disk, got, want)
		}
	}
}
