package kube

import (
	"context"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// EventReason is the reason of the Events xdshard records on objects it
// leaves out.
const EventReason = "XdshardRejected"

// startEvents starts the Event recorder: client-go's broadcaster, whose
// correlator aggregates and rate-limits repeated Events per object (a
// burst of 25, then one per five minutes), so a flapping object cannot
// flood the API server.
func (s *Source) startEvents(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(s.rc)
	if err != nil {
		return err
	}
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	s.mu.Lock()
	s.recorder = b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "xdshard"})
	s.mu.Unlock()
	s.bg.Go(func() { <-ctx.Done(); b.Shutdown() })
	return nil
}

// Problem records a Warning Event on the object a rejection names, with
// the diagnostic's text, as `kubectl describe` shows it. It is called once
// per problem when it appears; only rejections (not warnings) of objects
// read from Kubernetes are recorded.
func (s *Source) Problem(d snapshot.Diagnostic) {
	if d.Warning() || d.Origin != Origin || d.Object == "" {
		return
	}
	kind, rest, _ := strings.Cut(d.Object, " ")
	ns, name, namespaced := strings.Cut(rest, "/")
	if !namespaced {
		ns, name = "", rest
	}
	key := model.Key{Kind: model.Kind(kind), Namespace: ns, Name: name}
	s.mu.Lock()
	ref, ok := s.refs[key]
	rec := s.recorder
	s.mu.Unlock()
	if !ok || rec == nil {
		return
	}
	rec.Event(ref, corev1.EventTypeWarning, EventReason, d.Message)
}

// objectRef is what an Event needs to point at an object.
func objectRef(apiVersion, kind, ns, name string, uid types.UID) runtime.Object {
	return &corev1.ObjectReference{APIVersion: apiVersion, Kind: kind, Namespace: ns, Name: name, UID: uid}
}
