package server

import "fmt"

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
	if r.ring.Load() != nil && !r.ringOwns(tenant) {
		return fmt.Errorf("tenant %q is built by replica %s; roll it back there (this replica serves its copy and follows it)", tenant, r.Owner(tenant))
	}
	return nil
}
