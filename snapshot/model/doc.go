// Package model holds the mesh as xdshard sees it: the input objects
// (Kubernetes and Istio kinds, in their real shapes), grouped by tenant, with
// services resolved to their endpoints and each tenant's visible view.
//
// Sources (manifest files, Kubernetes) feed it Changes; builders read a
// TenantView, which is a consistent, immutable slice of the mesh for one
// tenant. It must never import the server or any xDS builder.
package model
