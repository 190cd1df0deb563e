package translate

import (
	"fmt"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// diagnostics collects problems per object, once each.
type diagnostics struct {
	items []snapshot.Diagnostic
	seen  map[snapshot.Diagnostic]bool
}

func newDiagnostics(from []model.Diagnostic) *diagnostics {
	d := &diagnostics{seen: map[snapshot.Diagnostic]bool{}}
	for _, m := range from {
		sev := snapshot.SeverityError
		if m.Warning {
			sev = snapshot.SeverityWarning
		}
		d.add(snapshot.Diagnostic{Severity: sev, Object: m.Object, Origin: originString(m.Origin), Message: m.Message})
	}
	return d
}

func originString(o model.Origin) string {
	if o.File == "" {
		return ""
	}
	return o.String()
}

func (d *diagnostics) add(x snapshot.Diagnostic) {
	if d.seen[x] {
		return
	}
	d.seen[x] = true
	d.items = append(d.items, x)
}

// warnf reports a part of obj that is not applied. obj may be nil when
// origin and ref are given instead.
func (d *diagnostics) warnf(obj *model.Object, format string, args ...any) {
	d.add(snapshot.Diagnostic{Severity: snapshot.SeverityWarning, Object: obj.Ref(), Origin: originString(obj.Origin), Message: fmt.Sprintf(format, args...)})
}

// errorf reports a part that is rejected. With obj nil, origin and ref name it.
func (d *diagnostics) errorf(obj *model.Object, origin model.Origin, ref string, format string, args ...any) {
	if obj != nil {
		origin, ref = obj.Origin, obj.Ref()
	}
	d.add(snapshot.Diagnostic{Severity: snapshot.SeverityError, Object: ref, Origin: originString(origin), Message: fmt.Sprintf(format, args...)})
}

func (d *diagnostics) list() []snapshot.Diagnostic { return d.items }
