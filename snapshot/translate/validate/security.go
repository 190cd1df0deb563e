package validate

import (
	"fmt"
	"net/netip"
	"strings"

	security "istio.io/api/security/v1beta1"
)

func parsePrefixOrIP(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func peerAuthentication(pa *security.PeerAuthentication, add adder) {
	if len(pa.PortLevelMtls) > 0 && len(pa.GetSelector().GetMatchLabels()) == 0 {
		add("spec.portLevelMtls needs a selector: port-level settings apply to selected workloads only")
	}
	for p := range pa.PortLevelMtls {
		port(p, "spec.portLevelMtls", add)
	}
}

func authorizationPolicy(ap *security.AuthorizationPolicy, add adder) {
	if ap.Selector != nil && (ap.TargetRef != nil || len(ap.TargetRefs) > 0) {
		add("spec: selector and targetRef cannot both be set")
	}
	custom := ap.Action == security.AuthorizationPolicy_CUSTOM
	if custom && ap.GetProvider() == nil {
		add("spec.provider is required with action CUSTOM")
	}
	if !custom && ap.GetProvider() != nil {
		add("spec.provider is only allowed with action CUSTOM")
	}
	for i, r := range ap.Rules {
		w := fmt.Sprintf("spec.rules[%d]", i)
		for j, f := range r.From {
			if f.Source == nil {
				add("%s.from[%d].source is required", w, j)
				continue
			}
			s := f.Source
			values(w, j, "principals", append(s.Principals, s.NotPrincipals...), add)
			values(w, j, "namespaces", append(s.Namespaces, s.NotNamespaces...), add)
			for _, b := range append(append(s.IpBlocks, s.NotIpBlocks...), append(s.RemoteIpBlocks, s.NotRemoteIpBlocks...)...) {
				if _, err := parsePrefixOrIP(b); err != nil {
					add("%s.from[%d]: %q is not an IP or CIDR", w, j, b)
				}
			}
		}
		for j, t := range r.To {
			if t.Operation == nil {
				add("%s.to[%d].operation is required", w, j)
				continue
			}
			for _, p := range append(t.Operation.Ports, t.Operation.NotPorts...) {
				var n uint32
				if _, err := fmt.Sscanf(p, "%d", &n); err != nil || fmt.Sprint(n) != p {
					add("%s.to[%d]: port %q is not a number", w, j, p)
				} else {
					port(n, fmt.Sprintf("%s.to[%d]", w, j), add)
				}
			}
		}
		for j, c := range r.When {
			if c.Key == "" {
				add("%s.when[%d].key is required", w, j)
			}
			if len(c.Values)+len(c.NotValues) == 0 {
				add("%s.when[%d]: values or notValues is required", w, j)
			}
		}
	}
}

// values checks principal and namespace patterns: not empty, and "*" only
// as a prefix, a suffix or the whole value.
func values(where string, j int, field string, vs []string, add adder) {
	for _, v := range vs {
		inner := strings.TrimSuffix(strings.TrimPrefix(v, "*"), "*")
		if v == "" || (v != "*" && strings.Contains(inner, "*")) {
			add("%s.from[%d].source.%s: %q is not a valid value (\"*\" only as prefix or suffix)", where, j, field, v)
		}
	}
}
