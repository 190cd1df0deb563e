package policy

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

const (
	// GeneratedLabel marks what xdshard made.
	GeneratedLabel = model.GeneratedLabel
	// IsolationName names the generated AuthorizationPolicy and
	// NetworkPolicy; the PeerAuthentication and Sidecar are "default", as
	// Istio's namespace-wide defaults are named.
	IsolationName = "xdshard-tenant-isolation"
	// namespaceNameLabel is set by Kubernetes on every Namespace.
	namespaceNameLabel = "kubernetes.io/metadata.name"
)

// MetricsPorts are opened to every namespace by the generated
// NetworkPolicy: istio-agent's merged metrics (15020) and Envoy's (15090),
// scraped by Prometheus wherever it runs.
var MetricsPorts = []int32{15020, 15090}

// Options tune generation.
type Options struct {
	TrustDomain string // default "cluster.local"
}

// Generate returns the tenant's isolation policies, and a warning for each
// that a user's object of the same name replaces. A tenant with the
// annotation xdshard.io/isolation: disabled on any namespace gets none.
func Generate(v *model.TenantView, opts Options) ([]*model.Object, []snapshot.Diagnostic) {
	if opts.TrustDomain == "" {
		opts.TrustDomain = "cluster.local"
	}
	if optedOut(v) || v.Tenant == model.SharedNamespace {
		return nil, nil
	}
	allowed := allowedNamespaces(v)
	var out []*model.Object
	for _, ns := range v.Namespaces {
		out = append(out,
			istioObject(model.KindPeerAuthentication, ns, "default", &security.PeerAuthentication{
				Mtls: &security.PeerAuthentication_MutualTLS{Mode: security.PeerAuthentication_MutualTLS_STRICT},
			}),
			istioObject(model.KindAuthorizationPolicy, ns, IsolationName, authorization(allowed, opts.TrustDomain)),
			istioObject(model.KindSidecar, ns, "default", &networking.Sidecar{
				Egress: []*networking.IstioEgressListener{{Hosts: egressHosts(v)}},
			}),
			networkPolicy(ns, allowed),
		)
	}
	return dropShadowed(v, out)
}

func optedOut(v *model.TenantView) bool {
	for _, o := range v.NamespaceObjects {
		if strings.EqualFold(o.Meta.Annotations[model.IsolationAnnotation], "disabled") {
			return true
		}
	}
	return false
}

// allowedNamespaces are the namespaces whose workloads may call the
// tenant's: its own, istio-system's (gateways) and trusted tenants'.
func allowedNamespaces(v *model.TenantView) []string {
	set := map[string]bool{model.SharedNamespace: true}
	for _, ns := range v.Namespaces {
		set[ns] = true
	}
	for _, nss := range v.Trusted {
		for _, ns := range nss {
			set[ns] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// authorization allows only principals (SPIFFE identities) of the allowed
// namespaces: with mTLS STRICT the principal is what the peer proved.
func authorization(allowed []string, trustDomain string) *security.AuthorizationPolicy {
	principals := make([]string, len(allowed))
	for i, ns := range allowed {
		principals[i] = fmt.Sprintf("%s/ns/%s/sa/*", trustDomain, ns)
	}
	return &security.AuthorizationPolicy{
		Action: security.AuthorizationPolicy_ALLOW,
		Rules:  []*security.Rule{{From: []*security.Rule_From{{Source: &security.Source{Principals: principals}}}}},
	}
}

// egressHosts are what the tenant may reach: its own namespaces,
// istio-system, and each service another tenant exported to it.
func egressHosts(v *model.TenantView) []string {
	hosts := []string{"./*", model.SharedNamespace + "/*"}
	for _, ns := range v.Namespaces {
		hosts = append(hosts, ns+"/*")
	}
	own := map[string]bool{model.SharedNamespace: true}
	for _, ns := range v.Namespaces {
		own[ns] = true
	}
	for _, s := range v.Services {
		if !own[s.Namespace] {
			hosts = append(hosts, s.Namespace+"/"+s.Hostname)
		}
	}
	slices.Sort(hosts[2:])
	return slices.Compact(hosts)
}

func networkPolicy(ns string, allowed []string) *model.Object {
	m := meta(ns, IsolationName)
	np := &netv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: m,
		Spec: netv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{},
			PolicyTypes: []netv1.PolicyType{netv1.PolicyTypeIngress},
			Ingress: []netv1.NetworkPolicyIngressRule{
				{From: []netv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{
					MatchExpressions: []metav1.LabelSelectorRequirement{{Key: namespaceNameLabel, Operator: metav1.LabelSelectorOpIn, Values: allowed}},
				}}}},
				{Ports: metricsPorts()},
			},
		},
	}
	return &model.Object{Key: model.Key{Kind: model.KindNetworkPolicy, Namespace: ns, Name: IsolationName}, APIVersion: "networking.k8s.io/v1", Meta: m, Origin: origin, Body: np}
}

func metricsPorts() []netv1.NetworkPolicyPort {
	tcp := corev1.ProtocolTCP
	out := make([]netv1.NetworkPolicyPort, len(MetricsPorts))
	for i, p := range MetricsPorts {
		port := intstr.FromInt32(p)
		out[i] = netv1.NetworkPolicyPort{Protocol: &tcp, Port: &port}
	}
	return out
}

var origin = model.Origin{File: "generated"}

func meta(ns, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{GeneratedLabel: "true"}}
}

func istioObject(kind model.Kind, ns, name string, spec any) *model.Object {
	version := "v1"
	return &model.Object{Key: model.Key{Kind: kind, Namespace: ns, Name: name}, APIVersion: model.Kinds[kind].Group + "/" + version, Meta: meta(ns, name), Origin: origin, Body: spec}
}

// dropShadowed removes each generated object a user's object of the same
// kind, namespace and name replaces, and reports it.
func dropShadowed(v *model.TenantView, gen []*model.Object) ([]*model.Object, []snapshot.Diagnostic) {
	// Only the kinds generated are looked at: a tenant's own objects are
	// mostly EndpointSlices and Pods.
	users, kinds := map[model.Key]*model.Object{}, map[model.Kind]bool{}
	for _, g := range gen {
		if kinds[g.Kind] {
			continue
		}
		kinds[g.Kind] = true
		for _, o := range v.Own[g.Kind] {
			users[o.Key] = o
		}
	}
	var out []*model.Object
	var diags []snapshot.Diagnostic
	for _, g := range gen {
		if u := users[g.Key]; u != nil {
			diags = append(diags, model.Warn(u, fmt.Sprintf("replaces the %s xdshard would generate for tenant isolation; make sure it isolates the tenant, or rename it to keep both", g.Kind)))
			continue
		}
		out = append(out, g)
	}
	return out, diags
}
