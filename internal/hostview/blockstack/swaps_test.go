package blockstack

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseSwaps(t *testing.T) {
	in := "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n" +
		"/dev/dm-2                               partition\t8388604\t\t0\t\t-2\n" +
		"/swap\\040file                          file\t\t1048572\t\t12\t\t-3\n" +
		"/old.swap\\040(deleted)                 file\t\t1024\t\t0\t\t5\n"
	want := []Swap{
		{Filename: "/dev/dm-2", Type: "partition", SizeKiB: 8388604, Priority: -2},
		{Filename: "/swap file", Type: "file", SizeKiB: 1048572, UsedKiB: 12, Priority: -3},
		{Filename: "/old.swap", Type: "file", SizeKiB: 1024, Priority: 5, Deleted: true},
	}
	got, err := ParseSwaps(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestParseSwapsErrors(t *testing.T) {
	for _, in := range []string{
		"Filename Type Size Used Priority\n/dev/sda2 partition x 0 -2\n",
		"Filename Type Size Used Priority\n/dev/sda2 partition 1 0\n",
		"Filename Type Size Used Priority\n/dev/sda2 partition 1 0 high\n",
	} {
		if _, err := ParseSwaps(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), "cannot parse swaps line 2") {
			t.Errorf("%q: got %v, want an error naming line 2", in, err)
		}
	}
}

func FuzzParseSwaps(f *testing.F) {
	f.Add("Filename\tType\tSize\tUsed\tPriority\n/dev/sda2 partition 100 0 -2\n")
	f.Add("/swapfile\\040(deleted) file 1 1 1\n")
	f.Fuzz(func(t *testing.T, in string) {
		sw, err := ParseSwaps(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, s := range sw {
			if s.Filename == "" {
				t.Errorf("empty filename from %q", in)
			}
		}
	})
}
