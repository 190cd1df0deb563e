package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/xdshard/xdshard/identity"
	"github.com/xdshard/xdshard/internal/helmtest"
)

// The chart in deploy/chart/xdshard, rendered by the real helm; and the
// two manifests in deploy/, which are its renderings.

var updateDeploy = flag.Bool("update-deploy", false, "rewrite deploy/xdshard.yaml and deploy/certificate.yaml from the chart")

const chartDir = "../../deploy/chart/xdshard"

const deployHeader = `# GENERATED from the Helm chart deploy/chart/xdshard with its default values
# (helm template xdshard deploy/chart/xdshard --namespace istio-system).
# Do not edit: change the chart, then regenerate this file and
# deploy/certificate.yaml with
#   go test ./cmd/xdshard -run TestChartDeployManifests -update-deploy
# (the test fails while they differ from the chart's rendering). Or install
# the chart itself: helm install xdshard deploy/chart/xdshard -n istio-system,
# which also prints what to add to istiod's meshConfig.
#
# xdshard beside istiod: replicas reading the mesh from Kubernetes with
# their service account and sharding tenants over the replicas they find
# through their Leases; RBAC, Service, NetworkPolicy, PodDisruptionBudget
# and HPA. Every port serves TLS with the certificate in Secret xdshard-tls
# (tls.crt, tls.key, ca.crt), which deploy/certificate.yaml has cert-manager
# issue from the mesh's CA; istiod reads xdshard's config on port 15011.
`

const certificateHeader = `# GENERATED from the Helm chart deploy/chart/xdshard
# (helm template xdshard deploy/chart/xdshard --namespace istio-system
#  --set tls.certManager.enabled=true --show-only templates/certificate.yaml);
# regenerate with go test ./cmd/xdshard -run TestChartDeployManifests -update-deploy.
# The Certificate for deploy/xdshard.yaml's Secret xdshard-tls.
`

// helmTemplate runs helm template on chart as release xdshard in
// namespace ns; a failure fails t with helm's message.
func helmTemplate(t *testing.T, chart, ns string, args ...string) string {
	t.Helper()
	return helmtest.Template(t, "xdshard", chart, ns, args...)
}

// chartObjects maps "Kind/name" to each rendered object's YAML.
type chartObjects map[string]string

func parseChart(t *testing.T, out string) chartObjects {
	t.Helper()
	objs := chartObjects{}
	for _, doc := range strings.Split(out, "\n---") {
		var m metav1.PartialObjectMetadata
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("rendered chart: %v\n%s", err, doc)
		}
		if m.Kind == "" {
			continue
		}
		key := m.Kind + "/" + m.Name
		if _, dup := objs[key]; dup {
			t.Fatalf("rendered chart: %s twice", key)
		}
		objs[key] = doc
	}
	return objs
}

// get decodes the object key strictly into into: a field its Kubernetes
// type does not have (a typo in a template) fails, as helm does not.
func (o chartObjects) get(t *testing.T, key string, into any) {
	t.Helper()
	doc, ok := o[key]
	if !ok {
		t.Fatalf("the chart renders no %s; it renders %v", key, o.keys())
	}
	if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
		t.Fatalf("%s: %v\n%s", key, err, doc)
	}
}

func (o chartObjects) keys() []string {
	var ks []string
	for k := range o {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// certificate is the part of cert-manager's Certificate the chart sets.
type certificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SecretName  string   `json:"secretName"`
		Duration    string   `json:"duration"`
		RenewBefore string   `json:"renewBefore"`
		Usages      []string `json:"usages"`
		URIs        []string `json:"uris"`
		DNSNames    []string `json:"dnsNames"`
		PrivateKey  struct {
			Algorithm      string `json:"algorithm"`
			Size           int    `json:"size"`
			RotationPolicy string `json:"rotationPolicy"`
		} `json:"privateKey"`
		IssuerRef struct {
			Name  string `json:"name"`
			Kind  string `json:"kind"`
			Group string `json:"group"`
		} `json:"issuerRef"`
	} `json:"spec"`
}

// TestChartRenders: with default values, without TLS, with cert-manager
// and without the autoscaler, every object decodes into its type, the
// Deployment's args are ones serve accepts in a Pod, and the objects agree
// on names, labels, ports and the TLS Secret.
func TestChartRenders(t *testing.T) {
	cases := []struct {
		name                        string
		set                         []string
		tls, certManager, autoscale bool
	}{
		{"defaults", nil, true, false, true},
		{"tls off", []string{"tls.enabled=false"}, false, false, true},
		{"cert-manager", []string{"tls.certManager.enabled=true"}, true, true, true},
		{"no autoscaler", []string{"autoscaleEnabled=false"}, true, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var args []string
			for _, s := range c.set {
				args = append(args, "--set", s)
			}
			objs := parseChart(t, helmTemplate(t, chartDir, "istio-system", args...))
			want := []string{"ClusterRole/xdshard", "ClusterRoleBinding/xdshard", "Deployment/xdshard", "NetworkPolicy/xdshard",
				"PodDisruptionBudget/xdshard", "Role/xdshard-members", "RoleBinding/xdshard-members", "Service/xdshard", "ServiceAccount/xdshard"}
			if c.autoscale {
				want = append(want, "HorizontalPodAutoscaler/xdshard")
			}
			if c.certManager {
				want = append(want, "Certificate/xdshard")
			}
			slices.Sort(want)
			if got := objs.keys(); !slices.Equal(got, want) {
				t.Fatalf("the chart renders %v, want %v", got, want)
			}
			d := chartDeploymentArgs(t, objs, c.tls)
			checkChartPorts(t, objs, d)
			checkChartRBAC(t, objs, d)
			wantScheme, wantSecret := corev1.URISchemeHTTP, ""
			if c.tls {
				wantScheme, wantSecret = corev1.URISchemeHTTPS, "xdshard-tls"
			}
			for _, p := range []*corev1.Probe{d.Spec.Template.Spec.Containers[0].ReadinessProbe, d.Spec.Template.Spec.Containers[0].LivenessProbe} {
				if p.HTTPGet.Scheme != wantScheme || p.HTTPGet.Port.IntValue() != 15014 {
					t.Errorf("probe %+v, want %s on 15014", p.HTTPGet, wantScheme)
				}
			}
			secret := ""
			for _, v := range d.Spec.Template.Spec.Volumes {
				if v.Secret != nil {
					secret = v.Secret.SecretName
				}
			}
			if secret != wantSecret {
				t.Errorf("the pods mount Secret %q, want %q", secret, wantSecret)
			}
			if c.certManager {
				var cert certificate
				objs.get(t, "Certificate/xdshard", &cert)
				s := cert.Spec
				if s.SecretName != secret || !slices.Equal(s.URIs, []string{"spiffe://cluster.local/ns/istio-system/sa/xdshard"}) ||
					!slices.Contains(s.DNSNames, "xdshard.istio-system.svc") || s.IssuerRef.Name != "istio-ca" {
					t.Errorf("Certificate %+v: want Secret %s, xdshard's SPIFFE URI and Service name, issuer istio-ca", s, secret)
				}
			}
			if c.autoscale {
				if d.Spec.Replicas != nil {
					t.Errorf("with the autoscaler the Deployment sets replicas %d; an apply would reset what the autoscaler chose", *d.Spec.Replicas)
				}
				var hpa autoscalingv2.HorizontalPodAutoscaler
				objs.get(t, "HorizontalPodAutoscaler/xdshard", &hpa)
				if hpa.Spec.ScaleTargetRef.Name != d.Name || *hpa.Spec.MinReplicas != 2 || hpa.Spec.MaxReplicas != 10 {
					t.Errorf("HPA %+v, want Deployment %s from 2 to 10", hpa.Spec, d.Name)
				}
			} else if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
				t.Errorf("without the autoscaler the Deployment has replicas %v, want 3", d.Spec.Replicas)
			}
		})
	}
}

// TestChartRevision: a revision is named and labelled apart from the
// default install, which selects none of its pods, and keeps its Leases
// in a namespace of its own (replicas sharing one form one ring).
func TestChartRevision(t *testing.T) {
	if _, err := helmtest.Run(t, "template", "xdshard", chartDir, "--namespace", "istio-system", "--set", "revision=canary"); err == nil || !strings.Contains(err.Error(), "lease.namespace") {
		t.Errorf("a revision with its Leases beside the default install's renders (%v); their replicas would form one ring", err)
	}
	objs := parseChart(t, helmTemplate(t, chartDir, "istio-system", "--set", "revision=canary", "--set", "lease.namespace=xdshard-canary"))
	var d appsv1.Deployment
	objs.get(t, "Deployment/xdshard-canary", &d)
	var role rbacv1.Role
	objs.get(t, "Role/xdshard-canary-members", &role)
	if role.Namespace != "xdshard-canary" || !slices.Contains(d.Spec.Template.Spec.Containers[0].Args, "--lease-namespace=xdshard-canary") {
		t.Errorf("the revision's Leases: Role in %s, args %q; want both in xdshard-canary", role.Namespace, d.Spec.Template.Spec.Containers[0].Args)
	}
	var def appsv1.Deployment
	parseChart(t, helmTemplate(t, chartDir, "istio-system")).get(t, "Deployment/xdshard", &def)
	sel, err := metav1.LabelSelectorAsSelector(def.Spec.Selector)
	if err != nil || sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("the default install's selector %v picks the revision's pods %v (%v)", def.Spec.Selector, d.Spec.Template.Labels, err)
	}
}

// TestChartDiscoverySelectors: meshConfig.discoverySelectors (istiod's
// chart's name and shape) reaches serve as --discovery-selectors, the same
// selectors once parsed; none by default (serve's default mesh); what
// serve would refuse (an unknown operator or field, not a list) fails the
// install naming the value, and what only serve checks (label syntax) it
// refuses at start, never reading the wrong namespaces.
func TestChartDiscoverySelectors(t *testing.T) {
	deploymentArgs := func(args ...string) []string {
		var d appsv1.Deployment
		parseChart(t, helmTemplate(t, chartDir, "istio-system", args...)).get(t, "Deployment/xdshard", &d)
		return d.Spec.Template.Spec.Containers[0].Args
	}
	def := deploymentArgs()
	if cfg := podServeFlags(t, def); len(cfg.discoverySel) != 0 || slices.ContainsFunc(def, func(a string) bool { return strings.HasPrefix(a, "--discovery-selectors") }) {
		t.Errorf("by default the Deployment passes selectors %v (args %q), want none", cfg.discoverySel, def)
	}
	want := []*metav1.LabelSelector{
		{MatchLabels: map[string]string{"istio-discovery": "enabled", "mesh.example.com/on": "true"}},
		{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: metav1.LabelSelectorOpIn, Values: []string{"shop", "pay.v2"}}, {Key: "legacy", Operator: metav1.LabelSelectorOpDoesNotExist}}},
		{},
	}
	js, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	cfg := podServeFlags(t, deploymentArgs("--set-json", "meshConfig.discoverySelectors="+string(js)))
	if !reflect.DeepEqual(cfg.discoverySel, want) {
		got, _ := json.Marshal(cfg.discoverySel)
		t.Errorf("serve reads the Deployment's selectors as %s, want %s", got, js)
	}
	// As a values file writes them, YAML.
	values := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(values, []byte("meshConfig:\n  discoverySelectors:\n    - matchLabels:\n        istio-discovery: \"on\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg = podServeFlags(t, deploymentArgs("-f", values))
	if len(cfg.discoverySel) != 1 || cfg.discoverySel[0].MatchLabels["istio-discovery"] != "on" {
		t.Errorf("a values file's selector reads as %+v", cfg.discoverySel)
	}
	for _, c := range []struct{ set, want string }{
		{`[{"matchExpressions":[{"key":"team","operator":"Equals","values":["a"]}]}]`, `meshConfig.discoverySelectors[0].matchExpressions[0].operator "Equals": want In, NotIn, Exists or DoesNotExist`},
		{`[{"matchLabels":{"a":"b"}},{"matchLabel":{"a":"b"}}]`, `meshConfig.discoverySelectors[1]: unknown field "matchLabel"`},
		{`{"matchLabels":{"a":"b"}}`, "meshConfig.discoverySelectors: want a list of label selectors"},
		{`["istio-discovery=enabled"]`, "meshConfig.discoverySelectors[0]: want a label selector"},
	} {
		if _, err := helmtest.Run(t, "template", "xdshard", chartDir, "--namespace", "istio-system", "--set-json", "meshConfig.discoverySelectors="+c.set); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("meshConfig.discoverySelectors=%s renders (%v); want it refused: %s", c.set, err, c.want)
		}
	}
	bad := deploymentArgs("--set-json", `meshConfig.discoverySelectors=[{"matchLabels":{"bad key!":"x"}}]`)
	t.Setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
	if _, err := serveFlags(bad[1:]); err == nil || !strings.Contains(err.Error(), "--discovery-selectors") || !strings.Contains(err.Error(), "bad key!") {
		t.Errorf("serve with %q: %v; want it refused, naming the flag and the key", bad, err)
	}
	if _, err := serveFlags([]string{"--config", t.TempDir(), "--discovery-selectors", "[{matchLabels: {a: b}}]"}); err == nil || !strings.Contains(err.Error(), "read from Kubernetes") {
		t.Errorf("serve --config with --discovery-selectors: %v; want it refused (files are read whole)", err)
	}
}

// chartDeploymentArgs checks the Deployment's args are what serve accepts
// in a Pod (the downward-API variables substituted as the kubelet does),
// with TLS or --insecure, and returns the Deployment.
func chartDeploymentArgs(t *testing.T, objs chartObjects, tls bool) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	objs.get(t, "Deployment/xdshard", &d)
	args := d.Spec.Template.Spec.Containers[0].Args
	for _, a := range args {
		if strings.HasPrefix(a, "--mcp-identities") {
			t.Errorf("the Deployment passes %s: MCP has no identity allow-list any more (istiod presents no client certificate)", a)
		}
	}
	cfg := podServeFlags(t, args)
	if !cfg.inCluster || cfg.leaseNamespace != "istio-system" || cfg.replicaID != "xdshard-7d9f-abcde" || cfg.peerAddr != "10.0.3.7:15012" ||
		cfg.xdsAddr != "0.0.0.0:15010" || cfg.mcpAddr != "0.0.0.0:15011" || cfg.adminAddr != "0.0.0.0:15014" || !cfg.applyNetpols {
		t.Errorf("the Deployment's args give %+v, want in-cluster, Leases in istio-system, the pod's name and IP, xDS on 15010, MCP on 15011, admin on 15014, NetworkPolicies applied", cfg)
	}
	wantTLS := identity.Files{}
	if tls {
		wantTLS = identity.Files{Cert: "/etc/xdshard/tls/tls.crt", Key: "/etc/xdshard/tls/tls.key", ClientCA: "/etc/xdshard/tls/ca.crt"}
	}
	if cfg.tls != wantTLS || cfg.insecure == tls {
		t.Errorf("the Deployment's args give TLS %+v, insecure %t; want %+v and insecure %t", cfg.tls, cfg.insecure, wantTLS, !tls)
	}
	return &d
}

// checkChartPorts: the container and the Service name each port as the
// NetworkPolicy numbers it, and every selector selects the pods.
func checkChartPorts(t *testing.T, objs chartObjects, d *appsv1.Deployment) {
	t.Helper()
	pod := labels.Set(d.Spec.Template.Labels)
	wantPorts := map[string]int32{"grpc-xds": 15010, "grpc-mcp": 15011, "grpc-peer": 15012, "http-admin": 15014}
	got := map[string]int32{}
	for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
		got[p.Name] = p.ContainerPort
	}
	if !reflect.DeepEqual(got, wantPorts) {
		t.Errorf("container ports %v, want %v", got, wantPorts)
	}
	var svc corev1.Service
	objs.get(t, "Service/xdshard", &svc)
	svcPorts := map[string]int32{}
	for _, p := range svc.Spec.Ports {
		svcPorts[p.Name] = p.Port
		if p.TargetPort.String() != p.Name {
			t.Errorf("Service port %s targets %s, want the container port of its name", p.Name, p.TargetPort.String())
		}
	}
	if want := map[string]int32{"grpc-xds": 15010, "grpc-mcp": 15011, "http-admin": 15014}; !reflect.DeepEqual(svcPorts, want) {
		t.Errorf("Service ports %v, want %v", svcPorts, want)
	}
	var pdb policyv1.PodDisruptionBudget
	objs.get(t, "PodDisruptionBudget/xdshard", &pdb)
	var np networkingv1.NetworkPolicy
	objs.get(t, "NetworkPolicy/xdshard", &np)
	selectors := map[string]*metav1.LabelSelector{
		"Deployment": d.Spec.Selector, "Service": {MatchLabels: svc.Spec.Selector}, "PodDisruptionBudget": pdb.Spec.Selector, "NetworkPolicy": &np.Spec.PodSelector,
	}
	for i, c := range d.Spec.Template.Spec.TopologySpreadConstraints {
		selectors[fmt.Sprintf("topology spread %d (%s)", i, c.TopologyKey)] = c.LabelSelector
	}
	if len(d.Spec.Template.Spec.TopologySpreadConstraints) != 2 {
		t.Errorf("topology spread %+v, want one replica per node and spread over zones", d.Spec.Template.Spec.TopologySpreadConstraints)
	}
	for what, s := range selectors {
		sel, err := metav1.LabelSelectorAsSelector(s)
		if err != nil || sel.Empty() || !sel.Matches(pod) {
			t.Errorf("the %s's selector %v does not select the pods %v (%v)", what, s, pod, err)
		}
	}
}

// checkChartRBAC: the pods run as the ServiceAccount the bindings name,
// which may keep Leases in the lease namespace.
func checkChartRBAC(t *testing.T, objs chartObjects, d *appsv1.Deployment) {
	t.Helper()
	var sa corev1.ServiceAccount
	objs.get(t, "ServiceAccount/xdshard", &sa)
	if d.Spec.Template.Spec.ServiceAccountName != sa.Name {
		t.Errorf("the pods run as %q, want ServiceAccount %s", d.Spec.Template.Spec.ServiceAccountName, sa.Name)
	}
	want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: "istio-system"}}
	var crb rbacv1.ClusterRoleBinding
	objs.get(t, "ClusterRoleBinding/xdshard", &crb)
	var rb rbacv1.RoleBinding
	objs.get(t, "RoleBinding/xdshard-members", &rb)
	var role rbacv1.Role
	objs.get(t, "Role/xdshard-members", &role)
	var cr rbacv1.ClusterRole
	objs.get(t, "ClusterRole/xdshard", &cr)
	if !reflect.DeepEqual(crb.Subjects, want) || crb.RoleRef.Name != cr.Name || !reflect.DeepEqual(rb.Subjects, want) || rb.RoleRef.Name != role.Name {
		t.Errorf("bindings %+v %+v, want ClusterRole %s and Role %s bound to %+v", crb, rb, cr.Name, role.Name, want)
	}
	if role.Namespace != "istio-system" || len(role.Rules) != 2 || !slices.Equal(role.Rules[0].Resources, []string{"leases"}) ||
		!slices.Equal(role.Rules[1].Resources, []string{"configmaps"}) || !slices.Contains(role.Rules[1].Verbs, "update") {
		t.Errorf("Role %+v, want Leases and ConfigMaps (the decisions kept) in istio-system", role)
	}
}

// TestChartDeployManifests: deploy/xdshard.yaml is the chart rendered with
// its default values, and deploy/certificate.yaml its cert-manager
// Certificate; -update-deploy rewrites them.
func TestChartDeployManifests(t *testing.T) {
	files := []struct {
		path, header string
		args         []string
	}{
		{"../../deploy/xdshard.yaml", deployHeader, nil},
		{"../../deploy/certificate.yaml", certificateHeader, []string{"--set", "tls.certManager.enabled=true", "--show-only", "templates/certificate.yaml"}},
	}
	for _, f := range files {
		want := f.header + strings.TrimSpace(helmTemplate(t, chartDir, "istio-system", f.args...)) + "\n"
		if *updateDeploy {
			if err := os.WriteFile(f.path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			gl, wl := strings.Split(string(got), "\n"), strings.Split(want, "\n")
			i := 0
			for i < len(gl) && i < len(wl) && gl[i] == wl[i] {
				i++
			}
			t.Errorf("%s is not the chart's rendering (first difference at line %d: %q, the chart gives %q); regenerate with go test ./cmd/xdshard -run TestChartDeployManifests -update-deploy",
				f.path, i+1, lineAt(gl, i), lineAt(wl, i))
		}
	}
}

func lineAt(lines []string, i int) string {
	if i < len(lines) {
		return lines[i]
	}
	return "(end of file)"
}

// A client of the NetworkPolicy test: a pod's namespace and labels.
type npClient struct {
	ns     string
	labels map[string]string
}

// admits says whether np lets client reach port of the pods it selects
// (np's namespace is the pods'): a rule admits when one of its ports and
// one of its peers match, no ports meaning every port and no peers every
// source, as the Kubernetes API defines.
func admits(t *testing.T, np *networkingv1.NetworkPolicy, client npClient, port int32) bool {
	t.Helper()
	match := func(s *metav1.LabelSelector, l map[string]string) bool {
		sel, err := metav1.LabelSelectorAsSelector(s)
		if err != nil {
			t.Fatalf("NetworkPolicy selector %v: %v", s, err)
		}
		return sel.Matches(labels.Set(l))
	}
	nsLabels := map[string]string{"kubernetes.io/metadata.name": client.ns}
	for _, r := range np.Spec.Ingress {
		portOK := len(r.Ports) == 0
		for _, p := range r.Ports {
			if p.Port == nil || p.Port.IntValue() == 0 {
				t.Fatalf("NetworkPolicy port %+v: the test reads port numbers only", p)
			}
			portOK = portOK || (p.Port.IntVal == port && (p.Protocol == nil || *p.Protocol == corev1.ProtocolTCP))
		}
		peerOK := len(r.From) == 0
		for _, f := range r.From {
			if f.IPBlock != nil {
				t.Fatalf("NetworkPolicy peer %+v: an IP block admits by address, not by pod", f)
			}
			nsOK := client.ns == np.Namespace
			if f.NamespaceSelector != nil {
				nsOK = match(f.NamespaceSelector, nsLabels)
			}
			podOK := f.PodSelector == nil || match(f.PodSelector, client.labels)
			peerOK = peerOK || (nsOK && podOK)
		}
		if portOK && peerOK {
			return true
		}
	}
	return false
}

// TestChartNetworkPolicy: the MCP port admits istiod's pods only, the
// peer port xdshard's own, xDS and admin everyone; mcp.allowedClients
// replaces istiod's selector, and an empty list (which would admit every
// source) is refused.
func TestChartNetworkPolicy(t *testing.T) {
	istiod := npClient{"istio-system", map[string]string{"app": "istiod", "istio.io/rev": "default"}}
	canary := npClient{"istio-canary", map[string]string{"app": "istiod"}}
	impostor := npClient{"acme", map[string]string{"app": "istiod"}}
	neighbour := npClient{"istio-system", map[string]string{"app": "istio-ingressgateway"}}
	sidecar := npClient{"acme", map[string]string{"app": "reviews"}}
	replica := npClient{"istio-system", map[string]string{"app": "xdshard"}}
	cases := []struct {
		name string
		args []string
		want map[int32][]npClient // port -> the clients admitted; the others are not
	}{
		{"defaults", nil, map[int32][]npClient{
			15010: {istiod, canary, impostor, neighbour, sidecar, replica},
			15011: {istiod},
			15012: {replica},
			15014: {istiod, canary, impostor, neighbour, sidecar, replica},
		}},
		{"allowedClients", []string{"--set-json", `mcp.allowedClients=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"istio-canary"}},"podSelector":{"matchLabels":{"app":"istiod"}}}]`},
			map[int32][]npClient{15011: {canary}, 15012: {replica}}},
	}
	all := []npClient{istiod, canary, impostor, neighbour, sidecar, replica}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var np networkingv1.NetworkPolicy
			parseChart(t, helmTemplate(t, chartDir, "istio-system", c.args...)).get(t, "NetworkPolicy/xdshard", &np)
			if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
				t.Errorf("policy types %v, want Ingress only (xdshard dials the API server and its peers)", np.Spec.PolicyTypes)
			}
			for port, admitted := range c.want {
				for _, cl := range all {
					want := slices.ContainsFunc(admitted, func(a npClient) bool { return reflect.DeepEqual(a, cl) })
					if got := admits(t, &np, cl, port); got != want {
						t.Errorf("port %d from %s pod %v: admitted %t, want %t", port, cl.ns, cl.labels, got, want)
					}
				}
			}
		})
	}
	objs := parseChart(t, helmTemplate(t, chartDir, "istio-system", "--set", "networkPolicy.enabled=false"))
	if _, ok := objs["NetworkPolicy/xdshard"]; ok {
		t.Error("networkPolicy.enabled=false still renders the NetworkPolicy")
	}
	if _, err := helmtest.Run(t, "template", "xdshard", chartDir, "--namespace", "istio-system", "--set-json", "mcp.allowedClients=[]"); err == nil || !strings.Contains(err.Error(), "admits everyone") {
		t.Errorf("an empty mcp.allowedClients renders (%v); a rule without peers admits every source", err)
	}
}

// chartNotes renders the chart's NOTES.txt as helm install prints it.
// helm template leaves NOTES out and helm install --dry-run needs a
// cluster, so a copy of the chart renders the same file through tpl, with
// the same values and named templates, into a ConfigMap.
func chartNotes(t *testing.T, ns string, args ...string) string {
	t.Helper()
	dir := t.TempDir()
	err := filepath.WalkDir(chartDir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(chartDir, path)
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(rel)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	notes, err := os.ReadFile(filepath.Join(chartDir, "templates", "NOTES.txt"))
	if err != nil {
		t.Fatal(err)
	}
	// Files in templates/ are not readable through .Files.
	if err := os.WriteFile(filepath.Join(dir, "notes-under-test.txt"), notes, 0o644); err != nil {
		t.Fatal(err)
	}
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ tpl (.Files.Get \"notes-under-test.txt\") . | quote }}\n"
	if err := os.WriteFile(filepath.Join(dir, "templates", "notes-under-test.yaml"), []byte(cm), 0o644); err != nil {
		t.Fatal(err)
	}
	var c corev1.ConfigMap
	out := helmTemplate(t, dir, ns, append(args, "--show-only", "templates/notes-under-test.yaml")...)
	parseChart(t, out).get(t, "ConfigMap/notes", &c)
	return c.Data["notes"]
}

// notesMeshConfig reads the meshConfig snippet NOTES prints (from its
// "meshConfig:" line to the next blank one) as istiod reads MeshConfig:
// a field istiod does not know fails.
func notesMeshConfig(t *testing.T, notes string) *meshv1alpha1.MeshConfig {
	t.Helper()
	_, after, ok := strings.Cut(notes, "\nmeshConfig:\n")
	if !ok {
		t.Fatalf("NOTES print no meshConfig snippet:\n%s", notes)
	}
	snippet, _, _ := strings.Cut(after, "\n\n")
	js, err := yaml.YAMLToJSON([]byte(snippet))
	if err != nil {
		t.Fatalf("NOTES' meshConfig snippet: %v\n%s", err, snippet)
	}
	mesh := &meshv1alpha1.MeshConfig{}
	if err := protojson.Unmarshal(js, mesh); err != nil {
		t.Fatalf("NOTES' meshConfig snippet is no MeshConfig: %v\n%s", err, snippet)
	}
	return mesh
}

// TestChartNotes: NOTES print the configSources istiod needs: the MCP
// address, and with TLS mode SIMPLE, the Service name as SNI (a name on
// the certificate) and a Secret holding the CA in istiod's namespace; and
// they say that istiod has no client identity, so the NetworkPolicy
// protects the port.
func TestChartNotes(t *testing.T) {
	type source struct{ Address, Mode, CredentialName, Sni string }
	cases := []struct {
		name, ns   string
		args       []string
		want       []source
		wantInText []string
	}{
		{"defaults", "istio-system", nil,
			[]source{{"xds://xdshard.istio-system.svc:15011", "SIMPLE", "xdshard-tls", "xdshard.istio-system.svc"}, {Address: "k8s://"}},
			[]string{"istiod presents no client identity", "NetworkPolicy xdshard is what protects it", "key ca.crt"}},
		{"tls off", "istio-system", []string{"--set", "tls.enabled=false"},
			[]source{{Address: "xds://xdshard.istio-system.svc:15011"}, {Address: "k8s://"}},
			[]string{"istiod presents no client identity", "tls.enabled=false"}},
		{"another namespace", "xdshard", nil,
			[]source{{"xds://xdshard.xdshard.svc:15011", "SIMPLE", "xdshard-ca", "xdshard.xdshard.svc"}, {Address: "k8s://"}},
			[]string{"kubectl -n istio-system create secret generic xdshard-ca --from-file=ca.crt"}},
		{"no NetworkPolicy", "istio-system", []string{"--set", "networkPolicy.enabled=false"},
			[]source{{"xds://xdshard.istio-system.svc:15011", "SIMPLE", "xdshard-tls", "xdshard.istio-system.svc"}, {Address: "k8s://"}},
			[]string{"WARNING: networkPolicy.enabled=false"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			notes := chartNotes(t, c.ns, c.args...)
			var got []source
			for _, s := range notesMeshConfig(t, notes).GetConfigSources() {
				tls := s.GetTlsSettings()
				mode := ""
				if tls != nil {
					mode = tls.GetMode().String()
				}
				got = append(got, source{s.GetAddress(), mode, tls.GetCredentialName(), tls.GetSni()})
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("NOTES' configSources %+v, want %+v\n%s", got, c.want, notes)
			}
			for _, w := range c.wantInText {
				if !strings.Contains(notes, w) {
					t.Errorf("NOTES do not say %q:\n%s", w, notes)
				}
			}
		})
	}
	// The SNI istiod sends is a name on the certificate cert-manager issues.
	objs := parseChart(t, helmTemplate(t, chartDir, "istio-system", "--set", "tls.certManager.enabled=true"))
	var cert certificate
	objs.get(t, "Certificate/xdshard", &cert)
	sni := notesMeshConfig(t, chartNotes(t, "istio-system", "--set", "tls.certManager.enabled=true")).GetConfigSources()[0].GetTlsSettings()
	if !slices.Contains(cert.Spec.DNSNames, sni.GetSni()) || sni.GetMode() != networkingv1alpha3.ClientTLSSettings_SIMPLE {
		t.Errorf("NOTES' tlsSettings %v: want mode SIMPLE and an SNI among the certificate's names %v", sni, cert.Spec.DNSNames)
	}
}
