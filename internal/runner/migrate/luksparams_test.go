package migrate

import (
	"reflect"
	"testing"

	"github.com/cryptshift/cryptshift/internal/model/layout"
)

// migrate formats with the layout defaults through the same translation
// as the planner (layout.LUKS.Params): its own copy once dropped
// Iterations. A default with a forced cost reaches migrate's parameters.
func TestVGConfigUsesTheLayoutLUKSParams(t *testing.T) {
	saved := layout.DefaultLUKS
	t.Cleanup(func() { layout.DefaultLUKS = saved })
	layout.DefaultLUKS.Iterations = 7
	got := vgConfig(&Options{}).LUKS
	if want := layout.DefaultLUKS.Params(""); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if got.Iterations != 7 {
		t.Fatalf("iterations: got %d, want 7", got.Iterations)
	}
}
