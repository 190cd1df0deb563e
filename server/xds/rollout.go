package xds

import (
	"context"
	"fmt"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/xdshard/xdshard/snapshot"
)

// Canary rollout of config: with the store's rollout on, a tenant's new
// version is a candidate, served only to its canary proxies (those whose
// node ID hashes under the canary percent). RunRollouts watches them: a
// canary that rejects the candidate aborts the rollout at once (the
// canaries get the stable version back, and the candidate's version is
// held out); once every canary has acknowledged every type the candidate
// changed, and the bake time has passed, the candidate is promoted to all.

// Rollout configures canary rollout; Percent 0 turns it off.
type Rollout struct {
	Percent int           // of each tenant's proxies, by node ID hash
	Bake    time.Duration // how long the candidate is served to canaries at least
}

// IsCanary says whether a proxy with this node ID is a canary of a rollout
// to percent of the proxies.
func IsCanary(nodeID string, percent int) bool {
	return percent > 0 && int(xxhash.Sum64String(nodeID)%100) < percent
}

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
		for _, tenant := range s.store.InRollout() {
			promote, abort := s.judge(tenant)
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

// judge looks at a tenant's canaries: abort (why) if one rejected a
// response made from the candidate; promote when the bake time has passed
// and every canary has acknowledged every type the candidate changed.
func (s *Server) judge(tenant string) (promote bool, abort string) {
	rs := s.store.Rollout(tenant)
	cand, stable := rs.Candidate, s.store.Current(tenant)
	if cand == nil || stable == nil {
		return false, ""
	}
	s.mu.Lock()
	var canaries []*conn
	for c := range s.conns {
		if c.canary && c.tenant == tenant {
			canaries = append(canaries, c)
		}
	}
	s.mu.Unlock()
	baked := time.Since(rs.Since) >= s.opts.Rollout.Bake
	all := true
	for _, c := range canaries {
		c.mu.Lock()
		for t, st := range c.types {
			if st.nack != nil && st.nack.Snapshot == cand.Version {
				c.mu.Unlock()
				return false, fmt.Sprintf("%s rejected %s: %s", c.node.GetId(), typeLabel(t), st.nack.Message)
			}
			if !st.requested || sameSet(stable, cand, c.view, t) {
				continue
			}
			if st.sentSnap != cand.Version || st.awaiting || st.acked != st.sentVersion {
				all = false
			}
		}
		c.mu.Unlock()
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
