package xds

import (
	"fmt"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// diagnostics collects the translation's problems per object, once each.
type diagnostics struct {
	items []snapshot.Diagnostic
	seen  map[snapshot.Diagnostic]bool
}

func newDiagnostics() *diagnostics {
	return &diagnostics{seen: map[snapshot.Diagnostic]bool{}}
}

func (d *diagnostics) add(x snapshot.Diagnostic) {
	if d.seen[x] {
		return
	}
	d.seen[x] = true
	d.items = append(d.items, x)
}

// warnf reports a part of obj that is not applied.
func (d *diagnostics) warnf(obj *model.Object, format string, args ...any) {
	d.add(model.Warn(obj, fmt.Sprintf(format, args...)))
}

// errorf reports a part that is rejected. With obj nil, origin and ref name it.
func (d *diagnostics) errorf(obj *model.Object, origin model.Origin, ref string, format string, args ...any) {
	if obj != nil {
		d.add(model.Reject(obj, fmt.Sprintf(format, args...)))
		return
	}
	d.add(snapshot.Diagnostic{Severity: snapshot.SeverityError, Object: ref, Origin: origin.String(), Message: fmt.Sprintf(format, args...)})
}

func (d *diagnostics) list() []snapshot.Diagnostic { return d.items }
