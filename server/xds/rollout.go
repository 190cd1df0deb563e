package xds

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/xdshard/xdshard/snapshot"
)

// Canary rollout of config: with rollout on for a tenant (the replica's
// setting, or the tenant's own from its Namespace annotations), its new
// version is a candidate, served only to its canary proxies: those whose
// labels match the canary selector, or without one, whose node ID hashes
// under the canary percent. RunRollouts watches them: when more than the
// NACK ratio of the canaries reject the candidate (by default, one), the
// rollout is aborted at once (the canaries get the stable version back,
// and the candidate's version is held out); once every other canary has
// acknowledged every type the candidate changed, and the bake time has
// passed, the candidate is promoted to all.

// Rollout is the replica's canary rollout setting. It is on for every
// tenant when Percent or Selector is set; a tenant's own setting
// (snapshot.RolloutPolicy) overrides it either way.
type Rollout struct {
	Percent int           // of each tenant's proxies, by node ID hash
	Bake    time.Duration // how long the candidate is served to canaries at least
	// Selector, a Kubernetes label selector over the proxies' labels
	// (node metadata LABELS), picks the canaries instead of the hash.
	Selector string
	// MaxNACKRatio is the share of canaries that may reject a candidate
	// without aborting its rollout; 0 aborts on the first rejection.
	MaxNACKRatio float64
	// AckTimeout is how long past Bake a canary may leave the candidate
	// unacknowledged before it counts as rejecting it (so one that never
	// ACKs cannot hold a rollout for ever). Default DefaultAckTimeout.
	AckTimeout time.Duration
	// Compile turns a selector into a matcher of node labels (the
	// assembly gives Kubernetes' label selectors; this face knows no
	// Kubernetes types). Without it, no proxy is a canary by selector.
	Compile func(selector string) (func(labels map[string]string) bool, error)
}

// DefaultAckTimeout is how long past the bake a canary may leave a
// candidate unacknowledged.
const DefaultAckTimeout = 30 * time.Second

// DefaultCanaryPercent is the share of canaries of a tenant whose own
// setting turns rollout on when the replica names no percent.
const DefaultCanaryPercent = 10

// On says whether the replica's setting turns rollout on.
func (r Rollout) On() bool { return r.Percent > 0 || r.Selector != "" }

// Effective is the rollout setting of a tenant whose own setting is pol:
// whether it is on, and how its canaries are picked.
func (r Rollout) Effective(pol snapshot.RolloutPolicy) (on bool, percent int, selector string) {
	switch pol.Mode {
	case snapshot.RolloutOff:
		return false, 0, ""
	case snapshot.RolloutInherit:
		on = r.On()
	default:
		on = true
	}
	percent, selector = r.Percent, r.Selector
	if pol.Percent > 0 || pol.Selector != "" {
		percent, selector = pol.Percent, pol.Selector
	}
	if on && percent == 0 && selector == "" {
		percent = DefaultCanaryPercent
	}
	return on, percent, selector
}

// maxLabels bounds the node labels kept per stream; a selector sees no
// more of a node that claims more.
const maxLabels = 64

// nodeLabels reads node metadata LABELS (as istio-agent sends the pod's
// labels), bounded.
func nodeLabels(n *core.Node) map[string]string {
	f := n.GetMetadata().GetFields()["LABELS"].GetStructValue().GetFields()
	if len(f) == 0 {
		return nil
	}
	out := make(map[string]string, min(len(f), maxLabels))
	for k, v := range f {
		if len(out) == maxLabels {
			break
		}
		if sv, ok := v.GetKind().(*structpb.Value_StringValue); ok && len(k) <= 317 && len(sv.StringValue) <= 63 {
			out[k] = sv.StringValue
		}
	}
	return out
}

// serving is the snapshot c is served now (the candidate if c is one of
// its canaries), and notes whether it is a canary.
func (s *Server) serving(c *conn) *snapshot.Snapshot {
	if c.view == snapshot.ViewPeer && s.opts.PeerServes != nil && !s.opts.PeerServes(c.tenant) {
		return nil // not built here yet: the peer keeps what it has
	}
	if c.view == snapshot.ViewPeer {
		return s.store.PeerServing(c.tenant, c.candidate)
	}
	snap, canary := s.store.Serving(c.tenant, func(cand *snapshot.Snapshot) bool { return s.canaryOf(c, cand.Rollout) })
	c.canary.Store(canary)
	return snap
}

// canaryOf says whether c is a canary of a candidate whose tenant's own
// setting is pol. A peer (another replica fetching the tenant) never is,
// whatever its node ID and labels: what it fetches it serves to every
// proxy it has, as rolled out.
func (s *Server) canaryOf(c *conn, pol snapshot.RolloutPolicy) bool {
	if c.view == snapshot.ViewPeer {
		return false
	}
	_, percent, selector := s.opts.Rollout.Effective(pol)
	if selector == "" {
		return IsCanary(c.node.GetId(), percent)
	}
	m, ok := s.selectors.Load(selector)
	if !ok {
		var match func(map[string]string) bool
		var err error
		if s.opts.Rollout.Compile != nil {
			match, err = s.opts.Rollout.Compile(selector)
		}
		if match == nil || err != nil {
			match = func(map[string]string) bool { return false } // checked where it is read; never a canary by a bad one
		}
		m, _ = s.selectors.LoadOrStore(selector, match)
	}
	return m.(func(map[string]string) bool)(c.labels)
}

// IsCanary says whether a proxy with this node ID is a canary of a rollout
// to percent of the proxies.
func IsCanary(nodeID string, percent int) bool {
	return percent > 0 && int(xxhash.Sum64String(nodeID)%100) < percent
}

// JudgeWithPeers makes RunRollouts count, beside this server's canaries,
// the other replicas' verdicts on their streams of a candidate at the
// peer face p (Options.Peers).
func (s *Server) JudgeWithPeers(p *Server) { s.peerFace.Store(p) }

// RunRollouts decides the tenants' rollouts every interval until ctx ends.
func (s *Server) RunRollouts(ctx context.Context, every time.Duration) {
	results := register(s.opts.Registry, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xdshard_rollouts_total",
		Help: "Canary rollouts of a tenant's new version that ended, by result: promoted, or aborted (a canary rejected it)."}, []string{"result"}))
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		inRollout := s.store.InRollout()
		if len(inRollout) == 0 {
			continue
		}
		// The streams of the tenants in rollout, in one pass over all of
		// them, not one per tenant.
		byTenant := make(map[string][]*conn, len(inRollout))
		for _, t := range inRollout {
			byTenant[t] = nil
		}
		for _, srv := range []*Server{s, s.peerFace.Load()} {
			if srv == nil {
				continue
			}
			srv.mu.Lock()
			for c := range srv.conns {
				if list, ok := byTenant[c.tenant]; ok && c.view != snapshot.ViewMCP && (c.view != snapshot.ViewPeer || c.candidate) {
					byTenant[c.tenant] = append(list, c)
				}
			}
			srv.mu.Unlock()
		}
		for _, tenant := range inRollout {
			rs := s.store.Rollout(tenant)
			promote, abort := s.judge(rs, s.store.Current(tenant), byTenant[tenant])
			if rs.Fetched {
				// The owner's rollout: this replica's canaries' verdict
				// goes to the owner, which alone promotes or aborts. A
				// rejection takes the candidate back here at once.
				switch {
				case abort != "":
					if held, err := s.store.Abort(tenant, abort); err == nil {
						s.log.Warn("a canary here rejected the owner's candidate; canaries here are back on the stable version, and the owner is told", "tenant", tenant, "version", held.Version, "why", abort)
						s.verdict(tenant, held.Version, false, abort)
					}
				case promote:
					s.verdict(tenant, rs.Candidate.Version, true, "")
				}
				continue
			}
			switch {
			case abort != "":
				if held, err := s.store.Abort(tenant, abort); err == nil {
					results.WithLabelValues("aborted").Inc()
					s.log.Warn("rollout aborted: a canary rejected the new version; canaries are back on the stable one, and this version is held out", "tenant", tenant, "version", held.Version, "why", abort)
				}
			case promote:
				if snap, err := s.store.Promote(tenant); err == nil {
					results.WithLabelValues("promoted").Inc()
					s.log.Info("rollout promoted: every canary accepted the new version", "tenant", tenant, "version", snap.Version)
				}
			}
		}
	}
}

// judge looks at a tenant's canaries among its proxy streams: abort (why)
// when more than the NACK ratio of them rejected a response made from the
// candidate, or left it unacknowledged past the bake and the ACK timeout;
// promote when the bake time has passed and every other canary has
// acknowledged every type the candidate changed.
func (s *Server) judge(rs snapshot.RolloutState, stable *snapshot.Snapshot, streams []*conn) (promote bool, abort string) {
	cand := rs.Candidate
	if cand == nil || stable == nil {
		return false, ""
	}
	var canaries, peers []*conn
	for _, c := range streams {
		switch {
		case c.view == snapshot.ViewPeer:
			peers = append(peers, c)
		case s.canaryOf(c, cand.Rollout):
			canaries = append(canaries, c)
		}
	}
	baked := time.Since(rs.Since) >= s.opts.Rollout.Bake
	ackTimeout := s.opts.Rollout.AckTimeout
	if ackTimeout <= 0 {
		ackTimeout = DefaultAckTimeout
	}
	overdue := time.Since(rs.Since) >= s.opts.Rollout.Bake+ackTimeout
	all, rejected, first := true, 0, ""
	for _, c := range canaries {
		c.mu.Lock()
		why, acked := "", true
		for _, e := range c.types {
			t, st := e.url, e.st
			if st.nack != nil && st.nack.Snapshot == cand.Version {
				why = fmt.Sprintf("%s rejected %s: %s", c.node.GetId(), typeLabel(t), st.nack.Message)
				break
			}
			if !st.requested || sameSet(stable, cand, c.view, t) {
				continue
			}
			if st.sentSnap != cand.Version || st.awaiting || st.acked != st.sentVersion {
				acked = false
			}
		}
		c.mu.Unlock()
		if why == "" && !acked && overdue {
			why = fmt.Sprintf("%s did not acknowledge it within %s of its start (bake %s, then %s)", c.node.GetId(), s.opts.Rollout.Bake+ackTimeout, s.opts.Rollout.Bake, ackTimeout)
		}
		switch {
		case why != "":
			rejected++
			if first == "" {
				first = why
			}
		case !acked:
			all = false
		}
	}
	// Another replica's canaries, through its stream of the candidate: it
	// ACKs once they all accepted it and it baked there, NACKs when they
	// rejected it (by the same ratio, there). A rejection there aborts.
	for _, p := range peers {
		p.mu.Lock()
		st := p.types.get(snapshot.PeerType)
		why, acked := "", st != nil && st.sentSnap == cand.Version && !st.awaiting && st.acked == st.sentVersion
		if st != nil && st.nack != nil && st.nack.Snapshot == cand.Version {
			why = fmt.Sprintf("on replica %s: %s", strings.TrimPrefix(p.node.GetId(), snapshot.PeerNodePrefix), st.nack.Message)
		}
		p.mu.Unlock()
		if why == "" && !acked && overdue {
			why = fmt.Sprintf("replica %s did not report its canaries' verdict within %s of its start", strings.TrimPrefix(p.node.GetId(), snapshot.PeerNodePrefix), s.opts.Rollout.Bake+ackTimeout)
		}
		switch {
		case why != "":
			return false, why
		case !acked:
			all = false
		}
	}
	if rejected > 0 && float64(rejected) > s.opts.Rollout.MaxNACKRatio*float64(len(canaries)) {
		if rejected == 1 {
			return false, first
		}
		return false, fmt.Sprintf("%d of %d canaries rejected it (the most a rollout tolerates is %g of them); first: %s", rejected, len(canaries), s.opts.Rollout.MaxNACKRatio, first)
	}
	return baked && all, ""
}

// sameSet says whether two versions of a tenant serve view the same set
// of type t.
func sameSet(a, b *snapshot.Snapshot, view snapshot.View, t string) bool {
	x, _ := setFor(a, view, t)
	y, _ := setFor(b, view, t)
	return x.GetVersion() == y.GetVersion()
}

// verdict tells the owner what this replica's canaries make of its
// candidate, if anyone listens.
func (s *Server) verdict(tenant, version string, accepted bool, why string) {
	if s.opts.CandidateVerdict != nil {
		s.opts.CandidateVerdict(tenant, version, accepted, why)
	}
}
