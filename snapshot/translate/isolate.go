package translate

import (
	"fmt"
	"maps"
	"slices"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// A build can fail on one object whose config istiod accepts but Envoy
// does not (a port above 65535, an empty address, a header named ""): a
// resource fails go-control-plane's Validate, the views are inconsistent,
// or translation panics. Such an object costs only itself: Compose finds
// it by building without parts of the tenant's inputs, leaves it out with
// an error diagnostic, and builds the rest.

// suspect is one input of a tenant's view that can be left out: a resolved
// service (from a Service and its EndpointSlices, or a ServiceEntry host)
// or an Istio object.
type suspect struct {
	svc *model.Service
	obj *model.Object
}

func (s suspect) reject(reason string) snapshot.Diagnostic {
	if s.obj != nil {
		return model.Reject(s.obj, reason)
	}
	return snapshot.Diagnostic{Severity: snapshot.SeverityError, Object: fmt.Sprintf("%s %s/%s", s.svc.Kind, s.svc.Namespace, s.svc.Name),
		Namespace: s.svc.Namespace, Origin: s.svc.Origin.String(), Message: reason}
}

// suspects lists the view's inputs in a fixed order: services, then
// DestinationRules, VirtualServices, and the tenant's and the root
// namespace's other objects.
func suspects(v *model.TenantView) []suspect {
	var out []suspect
	for _, s := range v.Services {
		out = append(out, suspect{svc: s})
	}
	for _, list := range [][]*model.Object{v.DestinationRules, v.VirtualServices} {
		for _, o := range list {
			out = append(out, suspect{obj: o})
		}
	}
	for _, m := range []map[model.Kind][]*model.Object{v.Own, v.Root} {
		for _, k := range sortedKinds(m) {
			for _, o := range m[k] {
				out = append(out, suspect{obj: o})
			}
		}
	}
	return out
}

// keeping returns a copy of v holding only the suspects in keep (and
// every input that is not a suspect, such as its Namespaces).
func keeping(v *model.TenantView, keep []suspect) *model.TenantView {
	svcs, objs := map[*model.Service]bool{}, map[*model.Object]bool{}
	for _, s := range keep {
		if s.svc != nil {
			svcs[s.svc] = true
		} else {
			objs[s.obj] = true
		}
	}
	cp := *v
	cp.Services = nil
	for _, s := range v.Services {
		if svcs[s] {
			cp.Services = append(cp.Services, s)
		}
	}
	filter := func(list []*model.Object) []*model.Object {
		var out []*model.Object
		for _, o := range list {
			if objs[o] {
				out = append(out, o)
			}
		}
		return out
	}
	cp.VirtualServices, cp.DestinationRules = filter(v.VirtualServices), filter(v.DestinationRules)
	cp.Own, cp.Root = map[model.Kind][]*model.Object{}, map[model.Kind][]*model.Object{}
	for k, list := range v.Own {
		cp.Own[k] = filter(list)
	}
	for k, list := range v.Root {
		cp.Root[k] = filter(list)
	}
	return &cp
}

// isolate finds the suspects without which v builds: the build of the
// first k suspects fails for the smallest such k, so the k-th is bad (the
// k-1 before it built). It is left out and the search goes on over the
// rest, until what remains builds. It costs about log2(suspects) builds
// per bad input. The returned diagnostics name each one and the error its
// inclusion caused.
func isolate(v *model.TenantView, build func(*model.TenantView) error) (*model.TenantView, []snapshot.Diagnostic) {
	all := suspects(v)
	var good []suspect // known to build together
	var diags []snapshot.Diagnostic
	rest := all
	for len(rest) > 0 {
		if build(keeping(v, append(append([]suspect(nil), good...), rest...))) == nil {
			good = append(good, rest...)
			break
		}
		// The smallest prefix of rest that fails with good: lo builds, hi fails.
		lo, hi := 0, len(rest)
		var hiErr error
		for hi-lo > 1 {
			mid := (lo + hi) / 2
			if err := build(keeping(v, append(append([]suspect(nil), good...), rest[:mid]...))); err != nil {
				hi, hiErr = mid, err
			} else {
				lo = mid
			}
		}
		if hiErr == nil {
			hiErr = build(keeping(v, append(append([]suspect(nil), good...), rest[:hi]...)))
		}
		if hiErr == nil {
			// Not reproducible on a prefix: the inputs fail only together.
			// Leave out the last one tried, so the tenant still builds.
			hiErr = fmt.Errorf("fails together with other inputs of the tenant")
		}
		bad := rest[hi-1]
		diags = append(diags, bad.reject(fmt.Sprintf("left out: xdshard cannot build config from it that Envoy accepts (%v); istiod accepts it, but proxies would reject it, so fix the object", hiErr)))
		good = append(good, rest[:hi-1]...)
		rest = rest[hi:]
	}
	return keeping(v, good), diags
}

func sortedKinds(m map[model.Kind][]*model.Object) []model.Kind {
	return slices.Sorted(maps.Keys(m))
}
