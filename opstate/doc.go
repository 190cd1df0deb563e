// Package opstate keeps the operators' and rollouts' decisions about
// tenants beyond one process: the version a rollback pinned (its whole
// snapshot, since builds no longer make it once the mesh moved on) and
// the candidate a rollout took back. They are the deployment's decisions,
// not one replica's: a replica restarted, or every replica at once,
// honours them again (server.Config.State).
//
// Two keepers: Dir, files in a directory beside the manifests (the file
// source), and ConfigMaps, one ConfigMap per decided tenant in the
// replicas' namespace (Kubernetes), written with resourceVersion checks.
package opstate
