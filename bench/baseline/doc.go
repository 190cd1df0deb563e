// Package baseline serves a fleet with go-control-plane's own
// SnapshotCache and server, used the way a user would, so xdshard is
// measured against it in the same run: ModePerNode, one snapshot per node
// with one version for all types (the common default), and ModePerTenant,
// its best case: nodes grouped by a NodeHash onto one snapshot per tenant,
// with per-type versions so a change re-sends only the changed type.
package baseline
