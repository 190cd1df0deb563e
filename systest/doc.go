// Package systest runs the mission's deployment on this machine with the
// real, unmodified programs, and checks it end to end: a kube-apiserver
// and etcd (scripts/kube-bins.sh), Istio's CRDs, istiod (pilot-discovery)
// and istio-agent (pilot-agent) built from istio.io/istio and configured
// from Istio's own Helm chart, helm, and three xdshard replicas started
// with the arguments xdshard's chart renders, sharding by Leases
// (scripts/istio-bins.sh builds the Istio programs and helm; scripts/test.sh
// sets XDSHARD_KUBE_BIN and XDSHARD_ISTIO_BIN). It holds tests only.
//
// What is not real, and why: there is no kubelet, scheduler or
// kube-proxy, so every program runs as a process on its own loopback
// address (as a pod on its own IP), a Pod's mounted Secret and service
// account are files written by the test with --kubeconfig for the
// in-cluster client, and a Service is a small TCP balancer that, as
// kube-proxy does, sends each new connection to a live endpoint.
package systest
