package layout

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzParse feeds arbitrary bytes to the parser and validator: they must
// never panic, and every reported problem must carry a path.
func FuzzParse(f *testing.F) {
	for _, pattern := range []string{"../../../playbooks/examples/*.yaml", "../../../testdata/layouts/invalid/*.yaml"} {
		files, _ := filepath.Glob(pattern)
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add([]byte("volumes: &a [*a]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		file, rep := Parse("fuzz.yaml", b)
		for _, p := range rep.Problems {
			if !strings.HasPrefix(p.Path, "$") || p.Message == "" {
				t.Fatalf("problem without path or message: %+v", p)
			}
		}
		if !rep.HasErrors() && file.Layout.APIVersion != APIVersion {
			t.Fatal("a layout with a wrong apiVersion passed validation")
		}
	})
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"20GiB", "1.5T", "40%VG", "100%FREE", "512", "0.1B", "9999999999999PiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sz, err := ParseSize(s)
		if err == nil && !sz.Relative() && sz.Bytes <= 0 {
			t.Fatalf("ParseSize(%q) accepted a non-positive size %d", s, sz.Bytes)
		}
	})
}

// A document whose aliases expand to more values than any layout has is
// cut off with an error, quickly. (The decoder walks only the schema's
// fields, so expansion is bounded by it; the cap keeps even that small.)
func TestAliasExpansionIsBounded(t *testing.T) {
	var y strings.Builder
	y.WriteString("opts: &opts [")
	for i := 0; i < 20000; i++ {
		if i > 0 {
			y.WriteString(", ")
		}
		fmt.Fprintf(&y, "o%d", i)
	}
	y.WriteString("]\nvol: &vol {name: v, size: 1GiB, mount: /srv, mountOptions: *opts}\n")
	y.WriteString("volumes: [*vol, *vol, *vol, *vol, *vol, *vol, *vol, *vol, *vol, *vol]\n")
	start := time.Now()
	_, rep := Parse("fanout.yaml", []byte(y.String()))
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("parsing took %s", took)
	}
	if !rep.HasErrors() || !strings.Contains(rep.Error(), "expands to more than 100000 values") {
		t.Fatalf("got %d problems, first %v", len(rep.Problems), rep.Problems[:min(3, len(rep.Problems))])
	}
}
