package validate

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/xdshard/xdshard/snapshot/model"
)

// Object validates one object. A nil error means istiod accepts it; kinds
// without rules here are accepted.
func Object(o *model.Object) error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch b := o.Body.(type) {
	case *networking.VirtualService:
		virtualService(b, add)
	case *networking.DestinationRule:
		destinationRule(b, add)
	case *networking.ServiceEntry:
		serviceEntry(b, add)
	case *networking.Sidecar:
		sidecar(b, add)
	case *security.PeerAuthentication:
		peerAuthentication(b, add)
	case *security.AuthorizationPolicy:
		authorizationPolicy(b, add)
	}
	return errors.Join(errs...)
}

type adder func(format string, args ...any)

// host checks a host name as istiod does: DNS labels, "*" only as the
// whole first label (or the whole host, where allowed).
func host(h string, allowStar bool, where string, add adder) {
	switch {
	case h == "":
		add("%s: host is empty", where)
	case h == "*":
		if !allowStar {
			add("%s: host \"*\" is not allowed here", where)
		}
	default:
		name := strings.TrimPrefix(h, "*.")
		if strings.Contains(name, "*") {
			add("%s: host %q: \"*\" may only be the whole first label", where, h)
			return
		}
		for _, label := range strings.Split(name, ".") {
			if errs := validation.IsDNS1123Label(label); len(errs) > 0 {
				add("%s: host %q: label %q is not a DNS label", where, h, label)
				return
			}
		}
	}
}

func duration(d *durationpb.Duration, where string, add adder) {
	if d == nil {
		return
	}
	if err := d.CheckValid(); err != nil {
		add("%s: %v", where, err)
		return
	}
	if d.AsDuration() < time.Millisecond {
		add("%s: %s is below istiod's minimum of 1ms", where, d.AsDuration())
	}
}

func percent(v float64, where string, add adder) {
	if v < 0 || v > 100 {
		add("%s: percentage %v is outside 0-100", where, v)
	}
}

func re(expr, where string, add adder) {
	if _, err := regexp.Compile(expr); err != nil {
		add("%s: regex %q is not valid RE2: %v", where, expr, err)
	}
}

func stringMatch(m *networking.StringMatch, where string, add adder) {
	if r, ok := m.GetMatchType().(*networking.StringMatch_Regex); ok {
		re(r.Regex, where, add)
	}
}

func port(n uint32, where string, add adder) {
	if n == 0 || n > 65535 {
		add("%s: port %d is outside 1-65535", where, n)
	}
}

func ip(addr string) bool {
	_, err := netip.ParseAddr(addr)
	return err == nil
}
