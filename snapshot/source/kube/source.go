package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/source/manifest"
)

// Origin is the origin of every object read from Kubernetes, in
// diagnostics.
const Origin = "kubernetes"

// Config says which API server to read.
type Config struct {
	// Kubeconfig is a kubeconfig file; "" reads the in-cluster config (a
	// Pod's service account).
	Kubeconfig string
	// Context is the kubeconfig context to use; "" for its current one.
	Context string
	Logger  *slog.Logger
	// Rediscover is how often kinds the server does not serve (an Istio
	// CRD not installed) are looked for again. Default 30 s.
	Rediscover time.Duration
	// Probe is how often the API server's health is checked while
	// serving. Default 5 s.
	Probe time.Duration
	// ApplyNetworkPolicies applies each tenant's generated NetworkPolicies
	// with server-side apply (field manager xdshard), and deletes them when
	// the tenant opts out or goes away, or their namespace leaves the mesh.
	ApplyNetworkPolicies bool
	// DiscoverySelectors say which namespaces are the mesh, as istiod's
	// meshConfig.discoverySelectors (ORed; see selectors.go): objects in
	// the others are not read into the model. None: every namespace but
	// kube-system, kube-public, kube-node-lease and local-path-storage.
	// istio-system is always read.
	DiscoverySelectors []*metav1.LabelSelector
}

// generatedLabel marks xdshard's own output: a NetworkPolicy with it is
// not read back as input.
const generatedLabel = model.GeneratedLabel

// RESTConfig returns the client configuration cfg names.
func RESTConfig(cfg Config) (*rest.Config, error) {
	if cfg.Kubeconfig == "" {
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster Kubernetes config: %w (outside a Pod, pass --kubeconfig FILE)", err)
		}
		return rc, nil
	}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: cfg.Kubeconfig},
		&clientcmd.ConfigOverrides{CurrentContext: cfg.Context}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig %s: %w", cfg.Kubeconfig, err)
	}
	return rc, nil
}

// Source is a model.Source over a Kubernetes API server.
type Source struct {
	cfg   Config
	log   *slog.Logger
	rc    *rest.Config
	dyn   dynamic.Interface
	disco discovery.DiscoveryInterface
	bg    sync.WaitGroup // informers, the Event broadcaster's shutdown, the NetworkPolicy reconciler: Run waits for them
	// life is Run's context: the informers live as long as it, whoever
	// starts them (a relist, whose own context bounds only its wait).
	life context.Context

	mu        sync.Mutex
	pending   model.Event                  // changes and diagnostics not yet reported
	served    map[model.Key]*model.Object  // what the model has
	rv        map[model.Key]string         // resourceVersion of each served object
	refs      map[model.Key]runtime.Object // each object's reference, for Events
	diagnosed map[model.Key]bool           // objects whose diagnostics were last reported non-empty
	recorder  record.EventRecorder
	wake      chan struct{}
	watching  map[model.Kind]schema.GroupVersionResource
	synced    []cache.InformerSynced
	stale     time.Time // when the API server stopped answering; zero while it answers

	mesh      mesh                                     // which namespaces are the mesh
	nsLabels  map[string]map[string]string             // the labels of every Namespace read, in the mesh or not
	informers map[model.Kind]cache.SharedIndexInformer // each kind's, to read a namespace entering the mesh
	stops     map[model.Kind]context.CancelFunc        // each kind's informer's stop
	relisting atomic.Bool                              // a relist after an outage is under way
	relisted  chan struct{}                            // a relist ended: Run hands over what it found, then counts it
	relists   atomic.Uint64                            // relists ended and handed over

	np *netpols
}

var _ model.Source = (*Source)(nil)

// New connects to the API server cfg names. It does not read anything yet.
func New(cfg Config) (*Source, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Rediscover <= 0 {
		cfg.Rediscover = 30 * time.Second
	}
	if cfg.Probe <= 0 {
		cfg.Probe = 5 * time.Second
	}
	sels, err := compileSelectors(cfg.DiscoverySelectors)
	if err != nil {
		return nil, fmt.Errorf("discovery selectors: %w", err)
	}
	rc, err := RESTConfig(cfg)
	if err != nil {
		return nil, err
	}
	rc = rest.CopyConfig(rc)
	rc.UserAgent = "xdshard"
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	disco, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		return nil, err
	}
	return &Source{cfg: cfg, log: cfg.Logger, rc: rc, dyn: dyn, disco: disco,
		served: map[model.Key]*model.Object{}, rv: map[model.Key]string{}, refs: map[model.Key]runtime.Object{}, diagnosed: map[model.Key]bool{}, wake: make(chan struct{}, 1), np: newNetpols(),
		watching: map[model.Kind]schema.GroupVersionResource{}, pending: emptyEvent(), relisted: make(chan struct{}, 1),
		mesh: mesh{selectors: sels}, nsLabels: map[string]map[string]string{}, informers: map[model.Kind]cache.SharedIndexInformer{},
		stops: map[model.Kind]context.CancelFunc{}}, nil
}

func emptyEvent() model.Event {
	return model.Event{Diagnostics: map[string][]snapshot.Diagnostic{}}
}

// Run reads every kind, reports the full state once every informer has
// synced, then each change, until ctx ends.
func (s *Source) Run(ctx context.Context, sink func(model.Event)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); s.bg.Wait() }() // everything it started ends before it returns
	s.mu.Lock()
	s.life = ctx
	s.mu.Unlock()
	factory := dynamicinformer.NewDynamicSharedInformerFactory(s.dyn, 0)
	start := time.Now()
	if err := s.startEvents(ctx); err != nil {
		return err
	}
	if err := s.discover(ctx, factory); err != nil {
		return err
	}
	s.mu.Lock()
	synced := slices.Clone(s.synced)
	s.mu.Unlock()
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil // ctx ended
	}
	first := s.take()
	first.Synced = true
	if s.cfg.ApplyNetworkPolicies {
		s.bg.Go(func() { s.reconcileNetpols(ctx) })
	}
	s.log.Info("Kubernetes read", "host", s.rc.Host, "kinds", len(synced), "objects", len(first.Changes), "mesh", s.mesh.String(), "took", time.Since(start).Round(time.Millisecond))
	sink(first)
	rediscover := time.NewTicker(s.cfg.Rediscover)
	defer rediscover.Stop()
	probe := time.NewTicker(s.cfg.Probe)
	defer probe.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-rediscover.C:
			if err := s.discover(ctx, factory); err != nil {
				s.log.Warn("Kubernetes discovery failed; trying again later", "err", err)
			}
		case <-probe.C:
			s.probe(ctx)
		case <-s.wake:
			if ev := s.take(); len(ev.Changes) > 0 || len(ev.Diagnostics) > 0 {
				sink(ev)
			}
		case <-s.relisted:
			if ev := s.take(); len(ev.Changes) > 0 || len(ev.Diagnostics) > 0 {
				sink(ev)
			}
			s.relists.Add(1)
		}
	}
}

// discover starts an informer for each kind the server serves and that is
// not read yet, and reports the kinds it does not serve.
func (s *Source) discover(ctx context.Context, factory dynamicinformer.DynamicSharedInformerFactory) error {
	_, lists, err := s.disco.ServerGroupsAndResources()
	if err != nil && len(lists) == 0 {
		return fmt.Errorf("Kubernetes discovery at %s: %w", s.rc.Host, err)
	}
	served := map[schema.GroupVersion]map[string]string{} // group/version -> kind -> resource
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		served[gv] = map[string]string{}
		for _, r := range l.APIResources {
			if !slices.Contains(r.Verbs, "watch") || strings.Contains(r.Name, "/") {
				continue // subresources
			}
			served[gv][r.Kind] = r.Name
		}
	}
	// Namespaces first, read in full before any other kind: which
	// namespaces are the mesh is known when their objects arrive.
	kinds := slices.Sorted(maps.Keys(model.Kinds))
	kinds = append([]model.Kind{model.KindNamespace}, slices.DeleteFunc(kinds, func(k model.Kind) bool { return k == model.KindNamespace })...)
	for _, kind := range kinds {
		s.mu.Lock()
		_, reading := s.watching[kind]
		s.mu.Unlock()
		if reading {
			continue
		}
		info := model.Kinds[kind]
		gvr, ok := pick(served, kind, info)
		key := "kubernetes kind " + string(kind)
		if !ok {
			s.report(key, []snapshot.Diagnostic{{Severity: snapshot.SeverityWarning, Origin: Origin,
				Message: fmt.Sprintf("%s (%s) is not served by the API server (its CRD is not installed?); it is read as empty, and read once it is served", kind, groupOf(info))}})
			continue
		}
		s.report(key, nil)
		inf, reg, stop, err := s.watch(factory, kind, gvr)
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.watching[kind] = gvr
		s.informers[kind] = inf
		s.stops[kind] = stop
		// Synced once the handler has seen every object of the first
		// list, not only once the cache holds them.
		s.synced = append(s.synced, reg.HasSynced)
		s.mu.Unlock()
		s.log.Info("reading from Kubernetes", "kind", kind, "resource", gvr.String())
		if kind == model.KindNamespace && !cache.WaitForCacheSync(ctx.Done(), reg.HasSynced) {
			return nil // ctx ended
		}
	}
	return nil
}

// watch starts kind's informer from factory, its events handled as the
// source handles them, until the source's Run ends or stop is called.
func (s *Source) watch(factory dynamicinformer.DynamicSharedInformerFactory, kind model.Kind, gvr schema.GroupVersionResource) (cache.SharedIndexInformer, cache.ResourceEventHandlerRegistration, context.CancelFunc, error) {
	inf := factory.ForResource(gvr).Informer()
	if err := inf.SetTransform(strip); err != nil {
		return nil, nil, nil, err
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.upsert(kind, obj) },
		UpdateFunc: func(_, obj any) { s.upsert(kind, obj) },
		DeleteFunc: func(obj any) { s.remove(kind, obj) },
	}
	if kind == model.KindNamespace {
		handler = cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { s.namespaceChanged(obj, false) },
			UpdateFunc: func(_, obj any) { s.namespaceChanged(obj, false) },
			DeleteFunc: func(obj any) { s.namespaceChanged(obj, true) },
		}
	}
	reg, err := inf.AddEventHandler(handler)
	if err != nil {
		return nil, nil, nil, err
	}
	_ = inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
		s.log.Debug("Kubernetes watch broke; client-go resumes it", "kind", kind, "err", err)
	})
	s.mu.Lock()
	life := s.life
	s.mu.Unlock()
	if life == nil {
		return nil, nil, nil, errors.New("the Kubernetes source is not running (Run starts it)")
	}
	ictx, stop := context.WithCancel(life)
	s.bg.Go(func() { inf.Run(ictx.Done()) })
	return inf, reg, stop, nil
}

// relist reads every kind again with fresh informers once the API server
// answers after an outage. client-go's informers resume on their own, but
// after their watches failed for a while they wait out a backoff (800 ms
// doubling to 30 s, jittered up to twice that) before they list again:
// changes made meanwhile would be seen only a minute after the API server
// is back. The fresh informers' first lists are what is current; an
// object served and missing from them was deleted while this replica
// could not see (its network was cut, not the API server), and is
// removed. Then the old informers stop. A relist that fails keeps the old
// informers, which resume on their own.
func (s *Source) relist(ctx context.Context) {
	if !s.relisting.CompareAndSwap(false, true) {
		return
	}
	defer s.relisting.Store(false)
	start := time.Now()
	s.mu.Lock()
	kinds := maps.Clone(s.watching)
	s.mu.Unlock()
	factory := dynamicinformer.NewDynamicSharedInformerFactory(s.dyn, 0)
	type fresh struct {
		inf  cache.SharedIndexInformer
		reg  cache.ResourceEventHandlerRegistration
		stop context.CancelFunc
	}
	news := map[model.Kind]fresh{}
	stopAll := func() {
		for _, f := range news {
			f.stop()
		}
	}
	for kind, gvr := range kinds {
		inf, reg, stop, err := s.watch(factory, kind, gvr)
		if err != nil {
			stopAll()
			s.log.Warn("reading Kubernetes again after its outage failed; client-go's informers resume on their own", "kind", kind, "err", err)
			return
		}
		news[kind] = fresh{inf, reg, stop}
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for _, f := range news {
		if !cache.WaitForCacheSync(wctx.Done(), f.reg.HasSynced) {
			stopAll()
			s.log.Warn("reading Kubernetes again after its outage did not finish; client-go's informers resume on their own")
			return
		}
	}
	removed := 0
	var goneNamespaces []string
	for kind, f := range news {
		have := map[model.Key]bool{}
		for _, o := range f.inf.GetStore().List() {
			if u, ok := o.(*unstructured.Unstructured); ok {
				have[keyOf(kind, u)] = true
			}
		}
		s.mu.Lock()
		for key := range s.served {
			switch {
			case key.Kind != kind || have[key]:
			case kind == model.KindNamespace:
				goneNamespaces = append(goneNamespaces, key.Name)
			default:
				s.removeKeyLocked(key)
				removed++
			}
		}
		s.mu.Unlock()
	}
	for _, name := range goneNamespaces {
		ns := &unstructured.Unstructured{}
		ns.SetName(name)
		s.namespaceChanged(ns, true)
		removed++
	}
	s.mu.Lock()
	var old []context.CancelFunc
	for kind, f := range news {
		if stop := s.stops[kind]; stop != nil {
			old = append(old, stop)
		}
		s.informers[kind], s.stops[kind] = f.inf, f.stop
	}
	s.mu.Unlock()
	for _, stop := range old {
		stop()
	}
	s.log.Info("read Kubernetes again after its outage", "kinds", len(news), "deleted meanwhile", removed, "took", time.Since(start).Round(time.Millisecond))
	select {
	case s.relisted <- struct{}{}:
	default: // Run has not counted the last one yet; it counts one
	}
}

// Relists counts the times the source read everything again after an API
// server outage, each counted once what it found changed (if anything)
// was handed to the sink.
func (s *Source) Relists() uint64 { return s.relists.Load() }

// pick is the first of the kind's accepted versions the server serves.
func pick(served map[schema.GroupVersion]map[string]string, kind model.Kind, info model.KindInfo) (schema.GroupVersionResource, bool) {
	for _, v := range info.Versions {
		gv := schema.GroupVersion{Group: info.Group, Version: v}
		if res, ok := served[gv][string(kind)]; ok {
			return gv.WithResource(res), true
		}
	}
	return schema.GroupVersionResource{}, false
}

func groupOf(info model.KindInfo) string {
	if info.Group == "" {
		return "core"
	}
	return info.Group
}

// upsert decodes an added or updated object as the manifest decoder
// decodes a document. An object that fails keeps its last good copy.
func (s *Source) upsert(kind model.Kind, obj any) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	key := keyOf(kind, u)
	if kind == model.KindNetworkPolicy && u.GetLabels()[generatedLabel] == "true" {
		s.np.mu.Lock()
		s.np.live[key.Namespace+"/"+key.Name] = true // xdshard's own output, not input
		s.np.mu.Unlock()
		return
	}
	ns := namespaceOf(key)
	s.mu.Lock()
	in := s.inMeshLocked(ns)
	same := s.rv[key] == u.GetResourceVersion() && s.served[key] != nil
	s.mu.Unlock()
	if !in {
		return // read if its namespace enters the mesh (namespaceChanged)
	}
	if same {
		return // a resync or relist of what is served: nothing to rebuild
	}
	data, err := json.Marshal(u.Object)
	var o *model.Object
	var diags []snapshot.Diagnostic
	if err != nil {
		diags = append(diags, model.Problem(model.Origin{File: Origin}, &key, "cannot be encoded as JSON: "+err.Error()))
	} else {
		for _, d := range manifest.Decode(Origin, data) {
			if d.Diag != nil {
				dg := *d.Diag
				dg.Origin = Origin
				diags = append(diags, dg)
			}
			if d.Object != nil {
				o = d.Object
				o.Origin = model.Origin{File: Origin}
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.inMeshLocked(ns) {
		return // its namespace left the mesh meanwhile
	}
	s.refs[key] = objectRef(u.GetAPIVersion(), u.GetKind(), u.GetNamespace(), u.GetName(), u.GetUID())
	s.setDiagsLocked(key, diags)
	if o != nil {
		s.served[key], s.rv[key] = o, u.GetResourceVersion()
		s.pending.Changes = append(s.pending.Changes, model.Change{Key: key, Object: o})
	}
	s.poke()
}

func (s *Source) remove(kind model.Kind, obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	key := keyOf(kind, u)
	if kind == model.KindNetworkPolicy && u.GetLabels()[generatedLabel] == "true" {
		s.np.mu.Lock()
		delete(s.np.live, key.Namespace+"/"+key.Name)
		s.np.mu.Unlock()
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeKeyLocked(key)
}

// removeKeyLocked forgets the object at key, and its diagnostics.
func (s *Source) removeKeyLocked(key model.Key) {
	s.setDiagsLocked(key, nil)
	delete(s.refs, key)
	if s.served[key] != nil {
		delete(s.served, key)
		delete(s.rv, key)
		s.pending.Changes = append(s.pending.Changes, model.Change{Key: key})
	}
	s.poke()
}

// namespaceChanged follows a Namespace: its labels say whether it is in
// the mesh. One entering the mesh is read with every object the informers
// hold in it, as istiod's discovery filter replays them
// (pkg/kube/kclient, applyDynamicFilter); one leaving is dropped with
// every object in it, its diagnostics and its generated NetworkPolicies.
func (s *Source) namespaceChanged(obj any, gone bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	name := u.GetName()
	s.mu.Lock()
	was := s.inMeshLocked(name)
	if gone {
		delete(s.nsLabels, name)
	} else {
		s.nsLabels[name] = maps.Clone(u.GetLabels())
		if s.nsLabels[name] == nil {
			s.nsLabels[name] = map[string]string{}
		}
	}
	now := s.inMeshLocked(name)
	if was && !now {
		s.dropNamespaceLocked(name)
	}
	s.mu.Unlock()
	switch {
	case gone && now:
		s.remove(model.KindNamespace, obj)
	case now:
		s.upsert(model.KindNamespace, u)
	}
	if was == now || gone {
		return
	}
	if now {
		s.log.Info("namespace enters the mesh: its labels match the discovery selectors", "namespace", name)
		s.replay(name)
	} else {
		s.log.Info("namespace leaves the mesh: its labels match no discovery selector; its objects are dropped and its generated NetworkPolicies deleted", "namespace", name)
	}
	s.np.poke()
}

// inMeshLocked says whether namespace ns is in the mesh.
func (s *Source) inMeshLocked(ns string) bool {
	l, known := s.nsLabels[ns]
	return s.mesh.includes(ns, l, known)
}

// inMesh is inMeshLocked, taking the lock.
func (s *Source) inMesh(ns string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inMeshLocked(ns)
}

// replay reads every object the informers hold in namespace ns.
func (s *Source) replay(ns string) {
	s.mu.Lock()
	infs := maps.Clone(s.informers)
	s.mu.Unlock()
	for _, kind := range slices.Sorted(maps.Keys(infs)) {
		if kind == model.KindNamespace {
			continue
		}
		objs, err := infs[kind].GetIndexer().ByIndex(cache.NamespaceIndex, ns)
		if err != nil {
			s.log.Warn("reading a namespace entering the mesh", "namespace", ns, "kind", kind, "err", err)
			continue
		}
		for _, o := range objs {
			s.upsert(kind, o)
		}
	}
}

// dropNamespaceLocked takes every object of namespace ns out of the model,
// and clears their diagnostics.
func (s *Source) dropNamespaceLocked(ns string) {
	for key := range s.refs {
		if namespaceOf(key) == ns {
			s.setDiagsLocked(key, nil)
			delete(s.refs, key)
		}
	}
	for key := range s.diagnosed {
		if namespaceOf(key) == ns {
			s.setDiagsLocked(key, nil)
		}
	}
	for key := range s.served {
		if namespaceOf(key) == ns {
			delete(s.served, key)
			delete(s.rv, key)
			s.pending.Changes = append(s.pending.Changes, model.Change{Key: key})
		}
	}
	s.poke()
}

// namespaceOf is the namespace an object's key places it in: a
// Namespace's own name.
func namespaceOf(k model.Key) string {
	if k.Kind == model.KindNamespace {
		return k.Name
	}
	return k.Namespace
}

// keyOf is the model key of an object of kind.
func keyOf(kind model.Kind, u *unstructured.Unstructured) model.Key {
	key := model.Key{Kind: kind, Namespace: u.GetNamespace(), Name: u.GetName()}
	if !model.Kinds[kind].Namespaced {
		key.Namespace = ""
	}
	return key
}

func diagKey(k model.Key) string { return "kubernetes " + k.String() }

// setDiagsLocked reports an object's diagnostics, or clears them when it
// had some: an object without problems costs no diagnostics entry.
func (s *Source) setDiagsLocked(key model.Key, diags []snapshot.Diagnostic) {
	if len(diags) == 0 && !s.diagnosed[key] {
		return
	}
	s.pending.Diagnostics[diagKey(key)] = diags
	if len(diags) > 0 {
		s.diagnosed[key] = true
	} else {
		delete(s.diagnosed, key)
	}
}

// report replaces the diagnostics under key.
func (s *Source) report(key string, diags []snapshot.Diagnostic) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending.Diagnostics[key] = diags
	s.poke()
}

func (s *Source) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take returns and clears what is pending.
func (s *Source) take() model.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	ev := s.pending
	s.pending = emptyEvent()
	return ev
}

// probe checks the API server's health. While it does not answer, a
// mesh-wide diagnostic says since when, and what was read keeps serving.
func (s *Source) probe(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, s.cfg.Probe)
	defer cancel()
	err := s.disco.RESTClient().Get().AbsPath("/readyz").Do(pctx).Error()
	s.mu.Lock()
	down := !s.stale.IsZero()
	s.mu.Unlock()
	switch {
	case err != nil && !down:
		s.mu.Lock()
		s.stale = time.Now()
		s.mu.Unlock()
		s.log.Warn("the Kubernetes API server does not answer; serving the last config read", "host", s.rc.Host, "err", err)
		s.report("kubernetes api", []snapshot.Diagnostic{{Severity: snapshot.SeverityError, Origin: Origin,
			Message: fmt.Sprintf("the API server at %s does not answer since %s (%v); the last config read keeps serving, and changes are read again when it answers", s.rc.Host, time.Now().UTC().Format(time.RFC3339), err)}})
	case err == nil && down:
		s.mu.Lock()
		since := s.stale
		s.stale = time.Time{}
		s.mu.Unlock()
		s.log.Info("the Kubernetes API server answers again", "host", s.rc.Host, "down", time.Since(since).Round(time.Second))
		s.report("kubernetes api", nil)
		if time.Since(since) > 2*time.Second {
			s.bg.Go(func() { s.relist(ctx) })
		}
	}
}

// Staleness is how long the API server has not answered; 0 while it does.
func (s *Source) Staleness() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stale.IsZero() {
		return 0
	}
	return time.Since(s.stale)
}
