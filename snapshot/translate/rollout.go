package translate

import (
	"fmt"
	"strconv"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// rolloutPolicy reads a tenant's own canary rollout setting from its
// Namespaces' annotations. A value that does not parse is left out with
// a warning on its Namespace. Where the tenant's namespaces disagree,
// "canary" wins over "off" (the careful choice), and for the percent and
// the selector the first namespace (by name) that sets one, with a
// warning on the others.
func rolloutPolicy(v *model.TenantView) (snapshot.RolloutPolicy, []snapshot.Diagnostic) {
	var pol snapshot.RolloutPolicy
	var diags []snapshot.Diagnostic
	warn := func(o *model.Object, format string, args ...any) {
		d := model.Warn(o, fmt.Sprintf(format, args...))
		d.Namespace = o.Meta.Name
		diags = append(diags, d)
	}
	var modeFrom, canaryFrom *model.Object // who set pol.Mode; who set the canaries
	for _, o := range v.NamespaceObjects {
		a := o.Meta.Annotations
		switch m := a[model.RolloutAnnotation]; m {
		case "":
		case string(snapshot.RolloutCanary), string(snapshot.RolloutOff):
			switch {
			case pol.Mode == "":
				pol.Mode, modeFrom = snapshot.RolloutMode(m), o
			case pol.Mode != snapshot.RolloutMode(m):
				warn(o, "%s %q disagrees with namespace %s of the same tenant; the tenant's versions are canaried (%q wins), set the same value on all its namespaces", model.RolloutAnnotation, m, modeFrom.Meta.Name, snapshot.RolloutCanary)
				pol.Mode = snapshot.RolloutCanary
			}
		default:
			warn(o, "%s %.64q: want %q or %q; ignored", model.RolloutAnnotation, m, snapshot.RolloutCanary, snapshot.RolloutOff)
		}
		percent, selector := 0, a[model.RolloutSelectorAnnotation]
		if p := a[model.RolloutPercentAnnotation]; p != "" {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 || n > 100 {
				warn(o, "%s %.16q: want a whole percent from 1 to 100; ignored", model.RolloutPercentAnnotation, p)
			} else {
				percent = n
			}
		}
		if selector != "" {
			if len(selector) > 1024 {
				warn(o, "%s of %d bytes: at most 1024; ignored", model.RolloutSelectorAnnotation, len(selector))
				selector = ""
			} else if _, err := labels.Parse(selector); err != nil {
				warn(o, "%s %.128q: %v; want a Kubernetes label selector such as track=canary; ignored", model.RolloutSelectorAnnotation, selector, err)
				selector = ""
			}
		}
		if selector != "" && percent != 0 {
			warn(o, "%s and %s both set: the selector picks the canaries, the percent is ignored", model.RolloutSelectorAnnotation, model.RolloutPercentAnnotation)
			percent = 0
		}
		if percent == 0 && selector == "" {
			continue
		}
		if canaryFrom != nil {
			if pol.Percent != percent || pol.Selector != selector {
				warn(o, "its canaries (%s, %s) differ from namespace %s of the same tenant, whose are used; set the same on all its namespaces", model.RolloutPercentAnnotation, model.RolloutSelectorAnnotation, canaryFrom.Meta.Name)
			}
			continue
		}
		pol.Percent, pol.Selector, canaryFrom = percent, selector, o
	}
	return pol, diags
}
