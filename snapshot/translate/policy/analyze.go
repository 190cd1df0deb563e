package policy

import (
	"fmt"
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/xdshard/xdshard/snapshot/model"
)

// Finding is one thing `xdshard analyze` reports.
type Finding struct {
	Object  string
	Origin  model.Origin
	Message string
}

func (f Finding) String() string {
	prefix := ""
	if f.Origin.File != "" {
		prefix = f.Origin.String() + ": "
	}
	return prefix + f.Object + ": " + f.Message
}

// Analyze reports, for every tenant: cross-tenant exposure (anything
// exported to every namespace, an AuthorizationPolicy that allows all), and
// namespaces where Istio's authorization (generated policies included) and
// Kubernetes NetworkPolicies disagree about which namespaces may connect.
// Only namespace-wide policies (no selector) are compared; selected
// workloads may differ, which the report says.
func Analyze(m *model.Mesh) []Finding {
	var out []Finding
	all := namespacesOf(m)
	for _, tenant := range m.Tenants() {
		v := m.View(tenant)
		gen, _ := Generate(v, Options{})
		for _, objs := range v.Own {
			for _, o := range objs {
				out = append(out, exposure(o)...)
			}
		}
		for _, ns := range v.Namespaces {
			out = append(out, disagreement(v, gen, ns, all)...)
		}
	}
	return out
}

func namespacesOf(m *model.Mesh) []string {
	var out []string
	for _, t := range m.Tenants() {
		out = append(out, m.Namespaces(t)...)
	}
	slices.Sort(out)
	return out
}

func exposure(o *model.Object) []Finding {
	var exportTo []string
	switch b := o.Body.(type) {
	case *corev1.Service:
		exportTo = strings.Split(b.Annotations[model.ExportToAnnotation], ",")
	case *networking.ServiceEntry:
		exportTo = b.ExportTo
	case *networking.VirtualService:
		exportTo = b.ExportTo
	case *networking.DestinationRule:
		exportTo = b.ExportTo
	case *security.AuthorizationPolicy:
		if allowsAll(b) {
			return []Finding{{o.Ref(), o.Origin, "allows requests from anyone, in every tenant; list the principals or namespaces it should allow"}}
		}
	}
	for _, t := range exportTo {
		if strings.TrimSpace(t) == "*" {
			return []Finding{{o.Ref(), o.Origin, "is exported to every namespace (exportTo \"*\"), so every tenant sees it; list the namespaces that need it"}}
		}
	}
	return nil
}

// allowsAll: an ALLOW policy with a rule that matches any source.
func allowsAll(ap *security.AuthorizationPolicy) bool {
	if ap.Action != security.AuthorizationPolicy_ALLOW {
		return false
	}
	for _, r := range ap.Rules {
		if len(r.From) == 0 && len(r.To) == 0 && len(r.When) == 0 {
			return true
		}
		for _, f := range r.From {
			if slices.Contains(f.Source.GetPrincipals(), "*") || slices.Contains(f.Source.GetNamespaces(), "*") {
				return true
			}
		}
	}
	return false
}

// disagreement compares, for one namespace, the source namespaces Istio
// allows with those NetworkPolicy lets in.
func disagreement(v *model.TenantView, gen []*model.Object, ns string, all []string) []Finding {
	istio, istioObj := istioAllowed(v, gen, ns)
	netpol, npObj := netpolAllowed(v, gen, ns)
	var istioOnly, netpolOnly []string
	for _, src := range all {
		if src == ns {
			continue
		}
		a, b := istio(src), netpol(src)
		if a && !b {
			istioOnly = append(istioOnly, src)
		}
		if b && !a {
			netpolOnly = append(netpolOnly, src)
		}
	}
	var out []Finding
	if len(istioOnly) > 0 {
		out = append(out, Finding{npObj, model.Origin{}, fmt.Sprintf("namespace %s: Istio allows traffic from %s that its NetworkPolicies block", ns, strings.Join(istioOnly, ", "))})
	}
	if len(netpolOnly) > 0 {
		out = append(out, Finding{istioObj, model.Origin{}, fmt.Sprintf("namespace %s: NetworkPolicies let in traffic from %s that Istio denies", ns, strings.Join(netpolOnly, ", "))})
	}
	return out
}

func objectsIn(v *model.TenantView, gen []*model.Object, kind model.Kind, ns string) []*model.Object {
	var out []*model.Object
	for _, o := range append(slices.Clone(v.Own[kind]), gen...) {
		if o.Kind == kind && o.Namespace == ns {
			out = append(out, o)
		}
	}
	return out
}

// istioAllowed: with no namespace-wide ALLOW policy Istio allows everyone.
func istioAllowed(v *model.TenantView, gen []*model.Object, ns string) (func(string) bool, string) {
	allowed, any := map[string]bool{}, false
	ref := "AuthorizationPolicies of " + ns
	for _, o := range objectsIn(v, gen, model.KindAuthorizationPolicy, ns) {
		ap := o.Body.(*security.AuthorizationPolicy)
		if ap.Action != security.AuthorizationPolicy_ALLOW || ap.Selector != nil {
			continue
		}
		any = true
		if allowsAll(ap) {
			return func(string) bool { return true }, o.Ref()
		}
		for _, r := range ap.Rules {
			for _, f := range r.From {
				for _, n := range f.Source.GetNamespaces() {
					allowed[n] = true
				}
				for _, p := range f.Source.GetPrincipals() {
					if parts := strings.Split(p, "/"); len(parts) >= 3 && parts[1] == "ns" {
						allowed[parts[2]] = true
					}
				}
			}
		}
	}
	if !any {
		return func(string) bool { return true }, ref
	}
	return func(src string) bool { return allowed[src] }, ref
}

// netpolAllowed: with no NetworkPolicy selecting every pod for ingress,
// Kubernetes lets everyone in.
func netpolAllowed(v *model.TenantView, gen []*model.Object, ns string) (func(string) bool, string) {
	allowed, any, open := map[string]bool{}, false, false
	ref := "NetworkPolicies of " + ns
	for _, o := range objectsIn(v, gen, model.KindNetworkPolicy, ns) {
		np := o.Body.(*netv1.NetworkPolicy)
		if len(np.Spec.PodSelector.MatchLabels)+len(np.Spec.PodSelector.MatchExpressions) > 0 || !slices.Contains(ingressTypes(np), netv1.PolicyTypeIngress) {
			continue
		}
		any = true
		for _, rule := range np.Spec.Ingress {
			if len(rule.From) == 0 && len(rule.Ports) == 0 {
				open = true
			}
			for _, peer := range rule.From {
				switch sel := peer.NamespaceSelector; {
				case sel == nil && peer.IPBlock == nil:
					allowed[ns] = true
				case sel != nil && len(sel.MatchLabels)+len(sel.MatchExpressions) == 0:
					open = true
				case sel != nil:
					for _, n := range selectedNames(sel) {
						allowed[n] = true
					}
				}
			}
		}
	}
	if !any || open {
		return func(string) bool { return true }, ref
	}
	return func(src string) bool { return allowed[src] }, ref
}

func ingressTypes(np *netv1.NetworkPolicy) []netv1.PolicyType {
	if len(np.Spec.PolicyTypes) == 0 {
		return []netv1.PolicyType{netv1.PolicyTypeIngress}
	}
	return np.Spec.PolicyTypes
}

// selectedNames reads the namespaces a selector names by
// kubernetes.io/metadata.name (other labels are not resolved).
func selectedNames(sel *metav1.LabelSelector) []string {
	var out []string
	if n := sel.MatchLabels[namespaceNameLabel]; n != "" {
		out = append(out, n)
	}
	for _, e := range sel.MatchExpressions {
		if e.Key == namespaceNameLabel && e.Operator == metav1.LabelSelectorOpIn {
			out = append(out, e.Values...)
		}
	}
	return out
}
