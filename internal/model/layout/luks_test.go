package layout

import (
	"reflect"
	"testing"
)

// Every LUKS setting of a layout reaches the luks door's parameters under
// its own name (migrate's hand-made copy once dropped Iterations, so a
// forced PBKDF cost never reached its luksFormat).
func TestLUKSParamsCarriesEveryField(t *testing.T) {
	var l LUKS
	v := reflect.ValueOf(&l).Elem()
	for i := 0; i < v.NumField(); i++ {
		switch f := v.Field(i); f.Kind() {
		case reflect.String:
			f.SetString("s" + v.Type().Field(i).Name)
		case reflect.Int:
			f.SetInt(int64(100 + i))
		default:
			t.Fatalf("LUKS.%s: a %s, which this test does not fill", v.Type().Field(i).Name, f.Kind())
		}
	}
	e := Encryption{Label: "vmail", LUKS: l}
	p := e.LUKSParams()
	pv := reflect.ValueOf(p) // KDF is embedded: FieldByName finds its fields too
	for i := 0; i < v.NumField(); i++ {
		name := v.Type().Field(i).Name
		got := pv.FieldByName(name)
		if !got.IsValid() {
			t.Errorf("luks.Params has no field %s for LUKS.%s", name, name)
			continue
		}
		if got.Interface() != v.Field(i).Interface() {
			t.Errorf("%s: got %v, want %v", name, got.Interface(), v.Field(i).Interface())
		}
	}
	if p.Label != "vmail" {
		t.Errorf("label: got %q, want vmail", p.Label)
	}
	if p.Iterations != l.Iterations || p.Iterations == 0 {
		t.Errorf("iterations: got %d, want %d", p.Iterations, l.Iterations)
	}
}
