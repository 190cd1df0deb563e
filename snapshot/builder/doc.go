// Package builder runs the pipeline from mesh changes to published
// snapshots: it applies changes to the model, debounces them per tenant
// (a quiet time plus a maximum delay), rebuilds only the tenants a change
// can affect, and publishes each result to the snapshot store.
//
// A failed build never replaces a tenant's last good snapshot. The builder
// never imports the server: the store is the only thing it shares with it.
package builder
