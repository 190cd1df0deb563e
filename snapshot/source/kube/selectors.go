package kube

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/xdshard/xdshard/snapshot/model"
)

// Which namespaces are the mesh: istiod's meshConfig.discoverySelectors
// (istio.io/istio pkg/kube/namespace/filter.go, discoveryNamespacesFilter),
// but for the last two rules, which keep a tenant's generated policies out
// of Kubernetes' own namespaces and keep the mesh-wide config read:
//
//   - A namespace is in the mesh when one selector matches its labels
//     (selectors are ORed; within one, matchLabels and matchExpressions are
//     ANDed), each converted as istiod converts it
//     (pkg/config/mesh/labelselector: {} matches every namespace). No
//     selector at all means every namespace, as in istiod.
//   - systemNamespaces are never in the mesh unless a selector picks them
//     explicitly: one that asks for something they carry (a matchLabels
//     entry, or an In or Exists expression) and matches. {} and selectors
//     made only of NotIn and DoesNotExist, which pick "everything else",
//     do not pull them in. istiod reads them when no selector is set, but
//     only reads; xdshard writes a NetworkPolicy in each tenant namespace,
//     and one in kube-system cuts every pod off CoreDNS (issue #25).
//   - The root namespace (model.SharedNamespace, istio-system) is always in
//     the mesh: it holds the mesh-wide config every tenant is built with.
//     istiod reads its MeshConfig there whatever the selectors say (its
//     ConfigMap watcher, pkg/config/mesh/kubemesh, is not filtered), but
//     filters istio-system's Istio config like any namespace's, a known
//     trap (istio/istio#33586, #39520: gateways lost their config) that
//     xdshard does not copy.
//
// default is an ordinary namespace: in the mesh with no selector, as in
// istiod (whose injection webhook also leaves out only systemNamespaces).

// systemNamespaces are Kubernetes' own namespaces, which are never tenants
// unless a discovery selector picks them explicitly: the list istiod's
// sidecar injector ignores (istio.io/istio pkg/kube/inject, IgnoredNamespaces).
var systemNamespaces = []string{"kube-system", "kube-public", "kube-node-lease", "local-path-storage"}

func isSystem(ns string) bool { return slices.Contains(systemNamespaces, ns) }

// ParseDiscoverySelectors reads serve's --discovery-selectors values: each
// a YAML or JSON list of Kubernetes label selectors, the shape of istiod's
// meshConfig.discoverySelectors (a single selector is taken as a list of
// one), all of them ORed. An empty value or list adds none. Every selector
// is checked as New checks it; an error says which value and selector, and
// how to write one.
func ParseDiscoverySelectors(values []string) ([]*metav1.LabelSelector, error) {
	var out []*metav1.LabelSelector
	for i, v := range values {
		where := fmt.Sprintf("--discovery-selectors %q (the Helm chart's meshConfig.discoverySelectors)", v)
		if len(values) > 1 {
			where = fmt.Sprintf("--discovery-selectors value %d of %d, %q", i+1, len(values), v)
		}
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		list, err := decodeSelectors(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", where, err)
		}
		if _, err := compileSelectors(list); err != nil {
			return nil, fmt.Errorf("%s: %v", where, err)
		}
		out = append(out, list...)
	}
	return out, nil
}

// decodeSelectors reads one flag value: a list of selectors, or one.
func decodeSelectors(v string) ([]*metav1.LabelSelector, error) {
	js, err := yaml.YAMLToJSON([]byte(v))
	if err != nil {
		return nil, fmt.Errorf("not YAML or JSON: %v; %s", err, selectorHint)
	}
	js = bytes.TrimSpace(js)
	var list []*metav1.LabelSelector
	switch {
	case bytes.HasPrefix(js, []byte("[")):
		err = strictJSON(js, &list)
	case bytes.HasPrefix(js, []byte("{")):
		var one *metav1.LabelSelector
		err = strictJSON(js, &one)
		list = []*metav1.LabelSelector{one}
	default:
		// kubectl's selector syntax (istio-discovery=enabled): say what
		// it is in meshConfig's shape.
		if ls, perr := metav1.ParseToLabelSelector(v); perr == nil && strings.ContainsAny(v, "=!()") {
			return nil, fmt.Errorf("this is kubectl's label selector syntax; --discovery-selectors takes meshConfig.discoverySelectors' shape, here '[%s]'", describe(ls))
		}
		return nil, fmt.Errorf("neither a list of label selectors nor one; %s", selectorHint)
	}
	if err != nil {
		if strings.Contains(err.Error(), "cannot unmarshal bool") || strings.Contains(err.Error(), "cannot unmarshal number") {
			return nil, fmt.Errorf("%v: a label value is a string; quote one YAML reads as a boolean or a number (\"on\", \"yes\", \"true\", \"1\"); %s", err, selectorHint)
		}
		return nil, fmt.Errorf("%v; %s", err, selectorHint)
	}
	return list, nil
}

// strictJSON decodes as the API server would, but refuses a field a label
// selector does not have (matchLabel for matchLabels), which the API
// server would drop silently.
func strictJSON(js []byte, into any) error {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("more than one document")
	}
	return nil
}

const selectorHint = `want a YAML or JSON list of label selectors as in istiod's meshConfig.discoverySelectors, such as '[{matchLabels: {istio-discovery: enabled}}, {matchExpressions: [{key: team, operator: In, values: [a, b]}]}]'`

// selector is one compiled discovery selector.
type selector struct {
	sel labels.Selector
	// explicit: it asks for something a namespace carries (matchLabels,
	// In, Exists), so it may pick a system namespace.
	explicit bool
}

// compileSelectors converts each selector as istiod does; an invalid one
// (an unknown operator, In without values, a malformed key or value) is an
// error naming it.
func compileSelectors(list []*metav1.LabelSelector) ([]selector, error) {
	var out []selector
	for i, ls := range list {
		if ls == nil {
			return nil, fmt.Errorf("selector %d is null; write {} to select every namespace, or a selector; %s", i+1, selectorHint)
		}
		sel, err := metav1.LabelSelectorAsSelector(ls)
		if err != nil {
			hint := ""
			switch {
			case strings.Contains(err.Error(), "not a valid label selector operator"):
				hint = "; want In, NotIn, Exists or DoesNotExist (as in a Kubernetes LabelSelector)"
			case strings.Contains(err.Error(), "values set"):
				hint = "; In and NotIn need values, Exists and DoesNotExist take none"
			}
			return nil, fmt.Errorf("selector %d %s: %v%s", i+1, describe(ls), err, hint)
		}
		explicit := len(ls.MatchLabels) > 0
		for _, e := range ls.MatchExpressions {
			explicit = explicit || e.Operator == metav1.LabelSelectorOpIn || e.Operator == metav1.LabelSelectorOpExists
		}
		out = append(out, selector{sel: sel, explicit: explicit})
	}
	return out, nil
}

// describe is a selector as JSON, as it was given.
func describe(ls *metav1.LabelSelector) string {
	b, err := json.Marshal(ls)
	if err != nil {
		return fmt.Sprint(*ls)
	}
	return string(b)
}

// mesh says which namespaces are the mesh, from the discovery selectors.
type mesh struct {
	selectors []selector // none: every namespace but the system ones
}

// includes says whether namespace name is in the mesh. known says whether
// its Namespace object (and so its labels) has been read: with selectors, a
// namespace not read yet is out, as in istiod, and read once it is.
func (m mesh) includes(name string, nsLabels map[string]string, known bool) bool {
	if name == model.SharedNamespace {
		return true
	}
	if len(m.selectors) == 0 {
		return !isSystem(name)
	}
	if !known {
		return false
	}
	system := isSystem(name)
	for _, s := range m.selectors {
		if (!system || s.explicit) && s.sel.Matches(labels.Set(nsLabels)) {
			return true
		}
	}
	return false
}

func (m mesh) String() string {
	if len(m.selectors) == 0 {
		return "every namespace but " + strings.Join(systemNamespaces, ", ")
	}
	var parts []string
	for _, s := range m.selectors {
		parts = append(parts, "{"+s.sel.String()+"}")
	}
	return "namespaces matching " + strings.Join(parts, " or ") + ", and " + model.SharedNamespace
}
