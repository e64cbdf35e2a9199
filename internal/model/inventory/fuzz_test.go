package inventory

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: arbitrary bytes never panic the inventory reader, and what it
// accepts it can write back and read again unchanged.
func FuzzParse(f *testing.F) {
	for _, pattern := range []string{"../../../playbooks/examples/*.inventory.json", "../../../testdata/inventories/*.json"} {
		files, _ := filepath.Glob(pattern)
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		inv, err := Parse("fuzz.json", b)
		if err != nil {
			return
		}
		out, err := inv.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse("again.json", out)
		if err != nil {
			t.Fatalf("re-reading a written inventory failed: %v", err)
		}
		out2, _ := again.Marshal()
		if string(out) != string(out2) {
			t.Fatal("an inventory changed on a write/read round trip")
		}
	})
}
