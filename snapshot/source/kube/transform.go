package kube

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/cache"
)

// strip is the informers' transform: it drops, before an object is cached,
// what the model never reads, so a large cluster costs little memory:
// managedFields and kubectl's last-applied annotation everywhere, the
// status of Istio objects, and all of a Pod but its labels, IPs, phase
// and node.
func strip(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil // a tombstone (cache.DeletedFinalStateUnknown) passes as is
	}
	meta, _ := u.Object["metadata"].(map[string]any)
	if meta != nil {
		delete(meta, "managedFields")
		if ann, ok := meta["annotations"].(map[string]any); ok {
			delete(ann, "kubectl.kubernetes.io/last-applied-configuration")
			if len(ann) == 0 {
				delete(meta, "annotations")
			}
		}
	}
	switch u.GetKind() {
	case "Pod":
		spec, _ := u.Object["spec"].(map[string]any)
		status, _ := u.Object["status"].(map[string]any)
		keptSpec := map[string]any{}
		if spec != nil && spec["nodeName"] != nil {
			keptSpec["nodeName"] = spec["nodeName"]
		}
		keptStatus := map[string]any{}
		for _, f := range []string{"podIP", "podIPs", "phase"} {
			if status != nil && status[f] != nil {
				keptStatus[f] = status[f]
			}
		}
		u.Object["spec"], u.Object["status"] = keptSpec, keptStatus
	case "Namespace", "Service", "EndpointSlice", "NetworkPolicy":
	default: // Istio kinds: only the spec is read
		delete(u.Object, "status")
	}
	return u, nil
}

var _ cache.TransformFunc = strip
