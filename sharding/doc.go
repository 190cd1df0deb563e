// Package sharding spreads the work of building tenants over replicas:
// members (a static list, or Kubernetes Leases), the rendezvous ring that
// names each tenant's owner, and the peer client that fetches an owner's
// already-encoded snapshot into a replica's store, so translation is done
// once per tenant in the whole deployment and every replica serves
// identical bytes and versions.
//
// It imports the snapshot and the model; never the server.
package sharding
