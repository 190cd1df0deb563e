package sharding

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// Membership is who the replicas are now. Changes receives a value after
// every change of Members.
type Membership interface {
	Members() []Member
	Changes() <-chan struct{}
}

// Static is a member list that never changes (--peers).
type Static []Member

// Joining lists the replicas whose Lease is live but says they have not
// built their tenants yet (ServingAnnotation "false"): left out of the
// ring until they have. Sorted.
func (l *Leases) Joining() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, lease := range l.leases {
		s := lease.Spec
		if s.HolderIdentity == nil || *s.HolderIdentity == "" || *s.HolderIdentity == l.cfg.Self.ID || lease.Annotations[ServingAnnotation] != "false" {
			continue
		}
		out = append(out, *s.HolderIdentity)
	}
	slices.Sort(out)
	return out
}

// Members implements Membership.
func (s Static) Members() []Member { return slices.Clone(s) }

// Changes implements Membership: a static list never changes.
func (s Static) Changes() <-chan struct{} { return nil }

// Lease labels and annotations.
const (
	MemberLabel        = "xdshard.io/member"
	PeerAddrAnnotation = "xdshard.io/peer-addr"
	// StreamsAnnotation holds the proxy streams the replica served at its
	// last renewal: what the replicas balance streams by.
	StreamsAnnotation = "xdshard.io/streams"
	// ServingAnnotation is "false" until the replica built the tenants
	// it will own (SetServing), "true" after. The others leave a replica
	// out of their ring while it says "false": a newcomer takes tenants
	// only once it can serve them, and a restarted one gives its tenants
	// to the others until it built them again (make before break, both
	// ways). A Lease without it (an older xdshard) counts as serving.
	ServingAnnotation = "xdshard.io/serving"
)

// Loads is a membership that knows how many proxy streams each member
// serves (as of its last report), and carries this replica's.
type Loads interface {
	Loads() map[string]int // member ID -> streams
	ReportStreams(streams func() int)
}

// LeaseConfig says how a replica takes part in membership over
// coordination.k8s.io/v1 Leases: one Lease per replica, named
// "xdshard-<ID>", labelled MemberLabel, holding its ID and its peer address.
type LeaseConfig struct {
	REST      *rest.Config
	Namespace string
	Self      Member
	Duration  time.Duration // a Lease not renewed for this long drops its member; default 15 s
	Renew     time.Duration // how often this replica renews its own; default 5 s
	Logger    *slog.Logger
}

// Leases is membership over Kubernetes Leases: this replica keeps its own
// Lease renewed, and every replica's informer sees the others'. A replica
// that stops gracefully releases its Lease, so the others drop it at
// once; one that crashes drops out when its Lease expires.
type Leases struct {
	cfg    LeaseConfig
	client kubernetes.Interface
	log    *slog.Logger

	mu      sync.Mutex
	leases  map[string]*coordinationv1.Lease // by name, as the informer sees them
	members []Member                         // live, sorted by ID
	changes chan struct{}
	streams func() int       // this replica's proxy streams, reported at each renewal
	clock   func() time.Time // tests' clock; nil is time.Now
	// What the Leases say is current only while this replica renews its
	// own and its informer shows it those renewals (a Lease's events come
	// through the same watch as the others'). While either lags, the
	// members are those last known ("uncertain" is not "dead"); once both
	// are current again (certainSince), every Lease is judged as renewed
	// no earlier than then, so the others have a lease duration to show
	// they live. renewedAt is this replica's last successful renewal.
	renewedAt, certainSince, uncertainSince time.Time
	uncertain                               bool

	serving  atomic.Bool   // this replica built what it owns (ServingAnnotation)
	renewNow chan struct{} // SetServing: renew at once
}

// SetServing says this replica built the tenants it owns: its Lease says
// so at once, and the others take it into their ring.
func (l *Leases) SetServing() {
	if l.serving.Swap(true) {
		return
	}
	select {
	case l.renewNow <- struct{}{}:
	default:
	}
}

var (
	_ Membership = (*Leases)(nil)
	_ Loads      = (*Leases)(nil)
)

// ReportStreams makes each renewal write streams() into this replica's
// Lease (StreamsAnnotation), for the others to balance by.
func (l *Leases) ReportStreams(streams func() int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.streams = streams
}

// NewLeases connects to the API server; Run takes part.
func NewLeases(cfg LeaseConfig) (*Leases, error) {
	if cfg.Duration <= 0 {
		cfg.Duration = 15 * time.Second
	}
	if cfg.Renew <= 0 {
		cfg.Renew = 5 * time.Second
	}
	if cfg.Duration < time.Second {
		return nil, fmt.Errorf("lease duration %s: want at least 1s (a Lease counts whole seconds)", cfg.Duration)
	}
	if cfg.Renew >= cfg.Duration {
		return nil, fmt.Errorf("lease renew period %s must be shorter than its duration %s", cfg.Renew, cfg.Duration)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Namespace == "" || cfg.Self.ID == "" || cfg.Self.Addr == "" {
		return nil, fmt.Errorf("lease membership needs a namespace, this replica's ID and its peer address")
	}
	client, err := kubernetes.NewForConfig(cfg.REST)
	if err != nil {
		return nil, err
	}
	return &Leases{cfg: cfg, client: client, log: cfg.Logger, leases: map[string]*coordinationv1.Lease{}, changes: make(chan struct{}, 1),
		renewNow: make(chan struct{}, 1)}, nil
}

// Members implements Membership.
func (l *Leases) Members() []Member {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.members)
}

// Changes implements Membership.
func (l *Leases) Changes() <-chan struct{} { return l.changes }

// Loads implements Loads: the streams each live member reported.
func (l *Leases) Loads() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for _, lease := range l.leases {
		id := lease.Spec.HolderIdentity
		if id == nil || !slices.ContainsFunc(l.members, func(m Member) bool { return m.ID == *id }) {
			continue
		}
		if n, err := strconv.Atoi(lease.Annotations[StreamsAnnotation]); err == nil && n >= 0 {
			out[*id] = n
		}
	}
	return out
}

// Run keeps this replica's Lease and follows the others' until ctx ends,
// then releases the Lease. It returns once its own Lease is held and the
// informer synced (ready), reporting later failures to the log.
func (l *Leases) Run(ctx context.Context, ready chan<- error) {
	if err := l.renew(ctx); err != nil {
		ready <- err
		return
	}
	l.renewed(true)
	factory := informers.NewSharedInformerFactoryWithOptions(l.client, 0, informers.WithNamespace(l.cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = MemberLabel + "=true" }))
	inf := factory.Coordination().V1().Leases().Informer()
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { l.seen(o, false) },
		UpdateFunc: func(_, o any) { l.seen(o, false) },
		DeleteFunc: func(o any) { l.seen(o, true) },
	})
	go inf.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		ready <- ctx.Err()
		return
	}
	l.recompute()
	ready <- nil
	tick := time.NewTicker(l.cfg.Renew)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			l.release()
			return
		case <-tick.C:
		case <-l.renewNow:
		}
		err := l.renew(ctx)
		if err != nil && ctx.Err() == nil {
			l.log.Warn("renewing this replica's Lease failed; the members last known are kept until the API server answers", "err", err)
		}
		l.renewed(err == nil)
		l.recompute() // expiries
	}
}

func (l *Leases) name() string { return "xdshard-" + l.cfg.Self.ID }

// renew creates or renews this replica's Lease.
func (l *Leases) renew(ctx context.Context) error {
	now := metav1.NewMicroTime(time.Now())
	secs := int32(l.cfg.Duration / time.Second)
	id := l.cfg.Self.ID
	leases := l.client.CoordinationV1().Leases(l.cfg.Namespace)
	cur, err := leases.Get(ctx, l.name(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: l.name(), Namespace: l.cfg.Namespace, Labels: map[string]string{MemberLabel: "true"},
				Annotations: map[string]string{PeerAddrAnnotation: l.cfg.Self.Addr, ServingAnnotation: strconv.FormatBool(l.serving.Load())}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &id, LeaseDurationSeconds: &secs, AcquireTime: &now, RenewTime: &now},
		}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	cur = cur.DeepCopy()
	l.mu.Lock()
	streams := l.streams
	l.mu.Unlock()
	if streams != nil {
		if cur.Annotations == nil {
			cur.Annotations = map[string]string{}
		}
		cur.Annotations[StreamsAnnotation] = strconv.Itoa(streams())
	}
	cur.Spec.HolderIdentity, cur.Spec.LeaseDurationSeconds, cur.Spec.RenewTime = &id, &secs, &now
	if cur.Annotations == nil {
		cur.Annotations = map[string]string{}
	}
	cur.Annotations[PeerAddrAnnotation] = l.cfg.Self.Addr
	cur.Annotations[ServingAnnotation] = strconv.FormatBool(l.serving.Load())
	_, err = leases.Update(ctx, cur, metav1.UpdateOptions{})
	return err
}

// release empties this replica's Lease holder, so peers drop it at once.
func (l *Leases) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	leases := l.client.CoordinationV1().Leases(l.cfg.Namespace)
	cur, err := leases.Get(ctx, l.name(), metav1.GetOptions{})
	if err != nil {
		return
	}
	cur = cur.DeepCopy()
	empty := ""
	cur.Spec.HolderIdentity = &empty
	if _, err := leases.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		l.log.Warn("releasing this replica's Lease failed; peers drop it when it expires", "err", err)
	}
}

func (l *Leases) seen(o any, deleted bool) {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = t.Obj
	}
	lease, ok := o.(*coordinationv1.Lease)
	if !ok {
		return
	}
	l.mu.Lock()
	if deleted {
		delete(l.leases, lease.Name)
	} else {
		l.leases[lease.Name] = lease
	}
	l.mu.Unlock()
	l.recompute()
}

// renewed records whether this replica's renewal just succeeded.
func (l *Leases) renewed(ok bool) {
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.renewedAt = l.now()
}

// currentLocked says whether what the Leases say is current: this
// replica's renewals succeed, and its informer has shown it one of its
// last three (a watch may lag a renewal under load).
func (l *Leases) currentLocked(now time.Time) bool {
	if l.renewedAt.IsZero() {
		return true // before the first renewal: Run has not started
	}
	slack := 2 * l.cfg.Renew
	if now.Sub(l.renewedAt) > slack {
		return false
	}
	own := l.leases[l.name()]
	return own != nil && own.Spec.RenewTime != nil && !own.Spec.RenewTime.Time.Before(l.renewedAt.Add(-slack))
}

func (l *Leases) now() time.Time {
	if l.clock != nil {
		return l.clock()
	}
	return time.Now()
}

// recompute derives the live members and signals a change. While the API
// server does not answer, the members last known are kept.
func (l *Leases) recompute() {
	now := l.now()
	l.mu.Lock()
	if !l.currentLocked(now) {
		if !l.uncertain {
			l.log.Warn("the API server does not answer, or its Leases lag: the members last known are kept", "members", len(l.members))
			l.uncertainSince = now
		}
		l.uncertain = true
		if l.members != nil {
			l.mu.Unlock()
			return
		}
	} else if l.uncertain {
		l.uncertain = false
		// Past half a lease unseen, the others' renewals may look expired
		// until they show again: they have a lease duration from now. A
		// shorter lag (a slow watch) changes nothing.
		if now.Sub(l.uncertainSince) > l.cfg.Duration/2 {
			l.certainSince = now
			l.log.Info("the Leases are current again; each member has a lease duration from now to renew", "unseen", now.Sub(l.uncertainSince).Round(time.Millisecond))
		}
	}
	var live []Member
	for _, name := range slices.Sorted(maps.Keys(l.leases)) {
		s := l.leases[name].Spec
		if s.HolderIdentity == nil || *s.HolderIdentity == "" || s.RenewTime == nil || s.LeaseDurationSeconds == nil {
			continue
		}
		renewed := s.RenewTime.Time
		if renewed.Before(l.certainSince) {
			renewed = l.certainSince
		}
		if now.After(renewed.Add(time.Duration(*s.LeaseDurationSeconds) * time.Second)) {
			continue
		}
		addr := l.leases[name].Annotations[PeerAddrAnnotation]
		if addr == "" || !strings.HasPrefix(name, "xdshard-") {
			continue
		}
		if *s.HolderIdentity != l.cfg.Self.ID && l.leases[name].Annotations[ServingAnnotation] == "false" {
			continue // not built yet: the others keep its tenants
		}
		live = append(live, Member{ID: *s.HolderIdentity, Addr: addr})
	}
	slices.SortFunc(live, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	changed := !slices.Equal(live, l.members)
	l.members = live
	l.mu.Unlock()
	if changed {
		l.log.Info("members changed", "members", len(live))
		select {
		case l.changes <- struct{}{}:
		default:
		}
	}
}
