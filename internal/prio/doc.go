// Package prio is a counting semaphore whose waiters are served by rank:
// the lowest rank first, in arrival order within a rank. xdshard ranks a
// push or a build by how many tenants the change behind it touched, so a
// change to one tenant is not queued behind a change to every tenant.
package prio
