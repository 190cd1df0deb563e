package validate

import (
	"strings"
	"testing"

	"github.com/xdshard/xdshard/snapshot/source/manifest"
)

func decode(t *testing.T, kind, spec string) error {
	t.Helper()
	group := map[string]string{
		"VirtualService": "networking.istio.io", "DestinationRule": "networking.istio.io", "ServiceEntry": "networking.istio.io",
		"Sidecar": "networking.istio.io", "PeerAuthentication": "security.istio.io", "AuthorizationPolicy": "security.istio.io",
	}[kind]
	doc := "apiVersion: " + group + "/v1\nkind: " + kind + "\nmetadata: {name: x, namespace: ns}\nspec:\n" + spec
	ds := manifest.Decode("t.yaml", []byte(doc))
	if len(ds) != 1 || ds[0].Object == nil {
		t.Fatalf("test input does not decode: %+v", ds)
	}
	return Object(ds[0].Object)
}

func TestRules(t *testing.T) {
	cases := []struct {
		name, kind, spec, want string // want "" = valid
	}{
		{"vs valid", "VirtualService", "  hosts: [reviews]\n  http: [{route: [{destination: {host: reviews}}]}]\n", ""},
		{"vs no hosts", "VirtualService", "  http: [{route: [{destination: {host: a}}]}]\n", "at least one host"},
		{"vs star host on mesh", "VirtualService", "  hosts: ['*']\n  http: [{route: [{destination: {host: a}}]}]\n", "not allowed"},
		{"vs star host on gateway", "VirtualService", "  hosts: ['*']\n  gateways: [gw]\n  http: [{route: [{destination: {host: a}}]}]\n", ""},
		{"vs bad host", "VirtualService", "  hosts: [re_views]\n  http: [{route: [{destination: {host: a}}]}]\n", "not a DNS label"},
		{"vs no routes", "VirtualService", "  hosts: [a]\n", "at least one http"},
		{"vs route and redirect", "VirtualService", "  hosts: [a]\n  http: [{route: [{destination: {host: a}}], redirect: {uri: /x}}]\n", "exactly one of"},
		{"vs no destination host", "VirtualService", "  hosts: [a]\n  http: [{route: [{destination: {subset: v1}}]}]\n", "destination.host is required"},
		{"vs weight range", "VirtualService", "  hosts: [a]\n  http: [{route: [{destination: {host: a}, weight: 120}]}]\n", "outside 0-100"},
		{"vs bad regex", "VirtualService", "  hosts: [a]\n  http: [{match: [{uri: {regex: '('}}], route: [{destination: {host: a}}]}]\n", "not valid RE2"},
		{"vs uppercase header", "VirtualService", "  hosts: [a]\n  http: [{match: [{headers: {X-A: {exact: b}}}], route: [{destination: {host: a}}]}]\n", "lowercase"},
		{"vs tiny timeout", "VirtualService", "  hosts: [a]\n  http: [{timeout: 0.0001s, route: [{destination: {host: a}}]}]\n", "minimum of 1ms"},
		{"vs abort status", "VirtualService", "  hosts: [a]\n  http: [{fault: {abort: {httpStatus: 99}}, route: [{destination: {host: a}}]}]\n", "outside 200-599"},
		{"vs fault percent", "VirtualService", "  hosts: [a]\n  http: [{fault: {delay: {fixedDelay: 1s, percentage: {value: 101}}}, route: [{destination: {host: a}}]}]\n", "outside 0-100"},
		{"dr valid", "DestinationRule", "  host: a\n  subsets: [{name: v1, labels: {v: '1'}}]\n", ""},
		{"dr no host", "DestinationRule", "  subsets: [{name: v1}]\n", "spec.host is required"},
		{"dr duplicate subset", "DestinationRule", "  host: a\n  subsets: [{name: v1}, {name: v1}]\n", "defined twice"},
		{"dr bad subset name", "DestinationRule", "  host: a\n  subsets: [{name: V_1}]\n", "not a DNS label"},
		{"dr mutual without certs", "DestinationRule", "  host: a\n  trafficPolicy: {tls: {mode: MUTUAL}}\n", "MUTUAL needs"},
		{"dr ejection percent", "DestinationRule", "  host: a\n  trafficPolicy: {outlierDetection: {maxEjectionPercent: 101}}\n", "outside 0-100"},
		{"se valid", "ServiceEntry", "  hosts: [a.example]\n  ports: [{number: 80, name: http}]\n  resolution: DNS\n", ""},
		{"se no ports", "ServiceEntry", "  hosts: [a.example]\n  resolution: DNS\n", "at least one port"},
		{"se duplicate port", "ServiceEntry", "  hosts: [a.example]\n  ports: [{number: 80, name: a}, {number: 80, name: b}]\n  resolution: DNS\n", "used twice"},
		{"se static without endpoints", "ServiceEntry", "  hosts: [a.example]\n  ports: [{number: 80, name: a}]\n  resolution: STATIC\n", "needs endpoints"},
		{"se static with a name", "ServiceEntry", "  hosts: [a.example]\n  ports: [{number: 80, name: a}]\n  resolution: STATIC\n  endpoints: [{address: db.example}]\n", "needs IP addresses"},
		{"se selector and endpoints", "ServiceEntry", "  hosts: [a.example]\n  ports: [{number: 80, name: a}]\n  resolution: STATIC\n  endpoints: [{address: 10.0.0.1}]\n  workloadSelector: {labels: {a: b}}\n", "cannot both"},
		{"se wildcard dns", "ServiceEntry", "  hosts: ['*.example.com']\n  ports: [{number: 80, name: a}]\n  resolution: DNS\n", "cannot be resolved by DNS"},
		{"se bad address", "ServiceEntry", "  hosts: [a.example]\n  ports: [{number: 80, name: a}]\n  resolution: DNS\n  addresses: [nope]\n", "not an IP or CIDR"},
		{"sidecar valid", "Sidecar", "  egress: [{hosts: ['./*', 'istio-system/*']}]\n", ""},
		{"sidecar no slash", "Sidecar", "  egress: [{hosts: ['reviews']}]\n", "not namespace/host"},
		{"sidecar empty", "Sidecar", "  {}\n", "needs egress"},
		{"pa port-level without selector", "PeerAuthentication", "  portLevelMtls: {8080: {mode: DISABLE}}\n", "needs a selector"},
		{"ap valid", "AuthorizationPolicy", "  rules: [{from: [{source: {principals: ['cluster.local/ns/a/sa/*']}}]}]\n", ""},
		{"ap custom without provider", "AuthorizationPolicy", "  action: CUSTOM\n  rules: [{}]\n", "provider is required"},
		{"ap provider without custom", "AuthorizationPolicy", "  action: DENY\n  provider: {name: ext}\n", "only allowed with action CUSTOM"},
		{"ap star in the middle", "AuthorizationPolicy", "  rules: [{from: [{source: {principals: ['a*b']}}]}]\n", "not a valid value"},
		{"ap bad ip block", "AuthorizationPolicy", "  rules: [{from: [{source: {ipBlocks: ['10.0.0.0/99']}}]}]\n", "not an IP or CIDR"},
		{"ap bad port", "AuthorizationPolicy", "  rules: [{to: [{operation: {ports: ['http']}}]}]\n", "not a number"},
		{"ap condition without values", "AuthorizationPolicy", "  rules: [{when: [{key: 'request.headers[x]'}]}]\n", "values or notValues"},
	}
	for _, c := range cases {
		err := decode(t, c.kind, c.spec)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: rejected a valid object: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.want)
		}
	}
}
