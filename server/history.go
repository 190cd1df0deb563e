package server

import (
	"fmt"

	"github.com/xdshard/xdshard/server/admin"
	"github.com/xdshard/xdshard/snapshot"
)

// rollback serves an earlier kept version of tenant and pins it. With
// sharding, only the tenant's owner does: the others serve its copy, so
// they follow.
func (r *Replica) rollback(tenant, version string) (string, error) {
	if err := r.ownsForWrite(tenant); err != nil {
		return "", err
	}
	snap, err := r.store.Rollback(tenant, version)
	if err != nil {
		return "", err
	}
	_, waiting := r.store.Pinned(tenant)
	r.log.Warn("tenant rolled back and pinned; newer builds wait until it is unpinned", "tenant", tenant, "version", snap.Version, "waiting", waiting)
	return snap.Version, nil
}

// unpin serves tenant's newest version again.
func (r *Replica) unpin(tenant string) (string, error) {
	if err := r.ownsForWrite(tenant); err != nil {
		return "", err
	}
	snap, err := r.store.Unpin(tenant)
	if err != nil {
		return "", err
	}
	r.log.Warn("tenant unpinned; serving its newest version", "tenant", tenant, "version", snap.Version)
	return snap.Version, nil
}

func (r *Replica) ownsForWrite(tenant string) error {
	if !r.ringOwns(tenant) {
		return fmt.Errorf("tenant %q is built by replica %s; roll it back there (this replica serves its copy and follows it)", tenant, r.Owner(tenant))
	}
	return nil
}

// RolloutStatus says tenant's canary rollout: whose setting, the canaries, the versions.
func (r *Replica) RolloutStatus(tenant string) (admin.RolloutStatus, error) {
	cur := r.store.Current(tenant)
	if cur == nil {
		return admin.RolloutStatus{}, fmt.Errorf("tenant %q has no snapshot on this replica", tenant)
	}
	rs := r.store.Rollout(tenant)
	// The setting of the candidate decides its rollout; without one, the
	// newest version's decides the next.
	pol := r.store.Latest(tenant).Rollout
	if rs.Candidate != nil {
		pol = rs.Candidate.Rollout
	}
	on, percent, selector := r.cfg.Rollout.Effective(pol)
	st := admin.RolloutStatus{Tenant: tenant, Enabled: on, Stable: cur.Version, HeldWhy: rs.HeldWhy, Setting: "replica"}
	if pol.Mode != snapshot.RolloutInherit || pol.Percent > 0 || pol.Selector != "" {
		st.Setting = "tenant"
	}
	if on {
		st.Percent, st.Selector, st.Bake, st.MaxNACKRatio = percent, selector, r.cfg.Rollout.Bake.String(), r.cfg.Rollout.MaxNACKRatio
		if selector != "" {
			st.Percent = 0
		}
	}
	if rs.Candidate != nil {
		st.Candidate, st.Since, st.Fetched = rs.Candidate.Version, rs.Since, rs.Fetched
	}
	if rs.Held != nil {
		st.Held = rs.Held.Version
	}
	return st, nil
}

// promote serves tenant's candidate to every proxy now.
func (r *Replica) promote(tenant string) (string, error) {
	if err := r.ownsForWrite(tenant); err != nil {
		return "", err
	}
	snap, err := r.store.Promote(tenant)
	if err != nil {
		return "", err
	}
	r.log.Info("rollout promoted by an operator", "tenant", tenant, "version", snap.Version)
	return snap.Version, nil
}

// abort takes tenant's candidate back and holds its version out.
func (r *Replica) abort(tenant string) (string, error) {
	if err := r.ownsForWrite(tenant); err != nil {
		return "", err
	}
	if _, err := r.store.Abort(tenant, "aborted by an operator"); err != nil {
		return "", err
	}
	r.log.Warn("rollout aborted by an operator", "tenant", tenant)
	return r.store.Current(tenant).Version, nil
}
