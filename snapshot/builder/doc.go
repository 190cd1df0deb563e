// Package builder is the scheduler between the model and the store: it
// applies changes to the model, debounces them per tenant (a quiet time
// plus a maximum delay), rebuilds only the tenants a change can affect,
// never builds one tenant twice at once, and publishes each result to the
// snapshot store. What a build is (translate.Compose when serving) is
// handed to it.
//
// A failed build never replaces a tenant's last good snapshot. The builder
// never imports the server: the store is the only thing it shares with it.
package builder
