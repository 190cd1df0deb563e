package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/xdshard/xdshard/server/xds"
	"github.com/xdshard/xdshard/snapshot"
)

// Options are what the admin pages read. Every field is required.
type Options struct {
	// Gatherer serves /metrics.
	Gatherer prometheus.Gatherer
	// Ready reports whether the replica may take traffic, and if not, why.
	Ready func() (ready bool, reason string)
	// Health reports "serving", "degraded" (it serves, with problems) or
	// "starting", with the reasons.
	Health func() (status string, reasons []string)
	// MeshWide are the problems that belong to no tenant (a file that
	// does not parse, an unknown kind, an unreadable folder).
	MeshWide func() []snapshot.Diagnostic
	// Authorize, when set, is asked before every request but /healthz,
	// /readyz and /metrics: a status to answer instead (401, 403) and
	// why, or 0 to serve it.
	Authorize func(*http.Request) (int, error)
	// Pprof serves /debug/pprof (the replica serves it on loopback, or
	// beyond only when told to).
	Pprof bool
	// Write, when set, is asked before every call that changes what is
	// served (POST /debug/rollback, /debug/unpin): a status to answer
	// instead and why, or 0. Nil refuses every write.
	Write func(*http.Request) (int, error)
	// Rollback and Unpin change what a tenant serves; nil when the
	// replica does not offer them. They return the version now served.
	Rollback func(tenant, version string) (string, error)
	Unpin    func(tenant string) (string, error)
	// Members lists the replicas sharding the tenants (nil: not sharded).
	Members func() []Member
	// DNS says what a proxy (or a namespace's view) resolves a host to.
	DNS func(proxy, namespace, host string) (DNSAnswer, error)
	// ConfigDump is what one proxy is served, as Envoy's admin config
	// dump, narrowed to types (cds, eds, lds, rds) if any.
	ConfigDump func(proxy string, types ...string) (*adminv3.ConfigDump, error)
	// Rollout says a tenant's canary rollout; Promote and Abort end it.
	Rollout func(tenant string) (RolloutStatus, error)
	Promote func(tenant string) (string, error)
	Abort   func(tenant string) (string, error)
	// Owner names the replica that builds a tenant ("" without sharding),
	// and where this replica's copy comes from.
	Owner func(tenant string) (owner, origin string)
	// Clients is /debug/syncz: every connected stream's sync state.
	Clients func() []xds.ClientStatus
	// Replica names the replica in answers ("xdshard-<id>").
	Replica string
	// Store is read for /debug/tenantz.
	Store *snapshot.Store
	// Failures are the tenants whose last build failed, with the error;
	// their served snapshot is the last good one.
	Failures func() map[string]error
}

// Handler serves /healthz (the process lives), /readyz (it serves config:
// 200 once the first full state is built, and from then on, whatever goes
// wrong, since proxies must keep their config), /statusz (serving or
// degraded, with the reasons, as JSON; always 200), /metrics,
// /debug/pprof/, /debug/syncz and /debug/tenantz; and, to HTTP/2 calls of
// content type application/grpc, the admin gRPC service (grpc.go).
func Handler(o Options) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ok, why := o.Ready(); !ok {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("/statusz", func(w http.ResponseWriter, _ *http.Request) {
		status, reasons := o.Health()
		if reasons == nil {
			reasons = []string{}
		}
		writeJSON(w, struct {
			Status  string   `json:"status"`
			Reasons []string `json:"reasons"`
		}{status, reasons})
	})
	mux.Handle("/metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}))
	if o.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	} else {
		mux.HandleFunc("/debug/pprof/", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "pprof is served on a loopback admin address, or beyond it with serve --admin-pprof", http.StatusNotFound)
		})
	}
	mux.HandleFunc("/", operatorPage(o))
	mux.HandleFunc("/debug/syncz", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, o.Clients()) })
	if o.Members != nil {
		mux.HandleFunc("/debug/members", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, o.Members()) })
	}
	if o.DNS != nil {
		mux.HandleFunc("/debug/dnsz", func(w http.ResponseWriter, r *http.Request) {
			q := r.URL.Query()
			ans, err := o.DNS(q.Get("proxy"), q.Get("namespace"), q.Get("host"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusNotFound)
				return
			}
			writeJSON(w, ans)
		})
	}
	if o.ConfigDump != nil {
		mux.HandleFunc("/debug/config_dump", func(w http.ResponseWriter, r *http.Request) {
			var types []string
			if t := r.URL.Query().Get("type"); t != "" {
				types = strings.Split(t, ",")
			}
			dump, err := o.ConfigDump(r.URL.Query().Get("proxy"), types...)
			if err != nil {
				http.Error(w, err.Error(), http.StatusNotFound)
				return
			}
			body, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(dump)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
		})
	}
	mux.HandleFunc("/debug/history", func(w http.ResponseWriter, r *http.Request) {
		tenant := r.URL.Query().Get("tenant")
		var found *TenantStatus
		for _, ts := range Tenants(o.Store, o.Failures()) {
			if ts.Tenant == tenant {
				found = &ts
			}
		}
		if found == nil {
			http.Error(w, fmt.Sprintf("tenant %q has no snapshot on this replica; see /debug/tenantz", tenant), http.StatusNotFound)
			return
		}
		type version struct {
			Version string    `json:"version"`
			Built   time.Time `json:"built"`
			Serving bool      `json:"serving"`
		}
		out := struct {
			Tenant   string    `json:"tenant"`
			Pinned   bool      `json:"pinned"`
			Waiting  int       `json:"waiting"`
			Versions []version `json:"versions"`
		}{Tenant: tenant, Pinned: found.Pinned, Waiting: found.Waiting}
		cur := o.Store.Current(tenant)
		for _, h := range o.Store.History(tenant) {
			out.Versions = append(out.Versions, version{h.Version, h.Built, cur != nil && h.Version == cur.Version})
		}
		writeJSON(w, out)
	})
	write := func(path string, do func(r *http.Request) (string, error)) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost {
				http.Error(w, "use POST", http.StatusMethodNotAllowed)
				return
			}
			if o.Write == nil {
				http.Error(w, "this replica takes no write calls", http.StatusForbidden)
				return
			}
			if code, err := o.Write(r); code != 0 {
				http.Error(w, err.Error(), code)
				return
			}
			v, err := do(r)
			if err != nil {
				http.Error(w, err.Error(), http.StatusConflict)
				return
			}
			writeJSON(w, map[string]string{"tenant": r.URL.Query().Get("tenant"), "serving": v})
		})
	}
	if o.Rollback != nil {
		write("/debug/rollback", func(r *http.Request) (string, error) {
			return o.Rollback(r.URL.Query().Get("tenant"), r.URL.Query().Get("to"))
		})
	}
	if o.Unpin != nil {
		write("/debug/unpin", func(r *http.Request) (string, error) { return o.Unpin(r.URL.Query().Get("tenant")) })
	}
	if o.Rollout != nil {
		mux.HandleFunc("/debug/rollout", func(w http.ResponseWriter, r *http.Request) {
			st, err := o.Rollout(r.URL.Query().Get("tenant"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusNotFound)
				return
			}
			writeJSON(w, st)
		})
		write("/debug/rollout/promote", func(r *http.Request) (string, error) { return o.Promote(r.URL.Query().Get("tenant")) })
		write("/debug/rollout/abort", func(r *http.Request) (string, error) { return o.Abort(r.URL.Query().Get("tenant")) })
	}
	mux.HandleFunc("/debug/tenantz", func(w http.ResponseWriter, _ *http.Request) {
		ts := Tenants(o.Store, o.Failures())
		for i := range ts {
			ts[i].Owner, ts[i].Origin = o.Owner(ts[i].Tenant)
		}
		writeJSON(w, Tenantz{MeshWide: MeshWide{Diagnostics: o.MeshWide()}, Tenants: ts})
	})
	rpc := grpcHandler(o)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isGRPC(r) {
			rpc.ServeHTTP(w, r)
			return
		}
		if o.Authorize == nil {
			mux.ServeHTTP(w, r)
			return
		}
		// Probes and metrics carry no tenant's data, and kubelet and
		// Prometheus present no identity.
		open := r.URL.Path == "/healthz" || r.URL.Path == "/readyz" || r.URL.Path == "/metrics"
		if code, err := o.Authorize(r); code != 0 && !open {
			http.Error(w, err.Error(), code)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// Tenantz is /debug/tenantz: the problems that belong to no tenant, then
// every tenant's status.
type Tenantz struct {
	MeshWide MeshWide       `json:"meshWide"`
	Tenants  []TenantStatus `json:"tenants"`
}

// MeshWide holds the diagnostics no tenant owns.
type MeshWide struct {
	Diagnostics []snapshot.Diagnostic `json:"diagnostics"`
}

// TenantStatus is one tenant's served snapshot: its version, when it was
// built, the versions kept for rollback, the problems with its objects
// (including those rejected because istiod would reject them), and the
// error of its last build when that build failed.
type TenantStatus struct {
	Tenant     string    `json:"tenant"`
	Version    string    `json:"version"`
	Built      time.Time `json:"built"`
	History    []string  `json:"history"`
	BuildError string    `json:"buildError,omitempty"`
	// Owner is the replica that builds the tenant, when tenants are
	// sharded; a replica that is not the owner serves the owner's copy.
	Owner string `json:"owner,omitempty"`
	// Origin says where this replica's copy comes from: "built here",
	// "fetched from <owner>", or "built here while <owner> is unreachable".
	Origin string `json:"origin,omitempty"`
	// Pinned is set after a rollback: the version served is held, and
	// Waiting newer versions wait until the tenant is unpinned.
	Pinned      bool                  `json:"pinned,omitempty"`
	Waiting     int                   `json:"waiting,omitempty"`
	Diagnostics []snapshot.Diagnostic `json:"diagnostics"`
}

// Tenants lists every served tenant's status.
func Tenants(store *snapshot.Store, failures map[string]error) []TenantStatus {
	out := []TenantStatus{}
	for _, t := range store.Tenants() {
		cur := store.Current(t)
		if cur == nil {
			continue
		}
		ts := TenantStatus{Tenant: t, Version: cur.Version, Built: cur.Built, Diagnostics: cur.Diagnostics}
		for _, h := range store.History(t) {
			ts.History = append(ts.History, h.Version)
		}
		if err := failures[t]; err != nil {
			ts.BuildError = err.Error()
		}
		ts.Pinned, ts.Waiting = store.Pinned(t)
		if ts.Diagnostics == nil {
			ts.Diagnostics = []snapshot.Diagnostic{}
		}
		out = append(out, ts)
	}
	return out
}

// RolloutStatus is /debug/rollout: a tenant's canary rollout.
type RolloutStatus struct {
	Tenant   string `json:"tenant"`
	Enabled  bool   `json:"enabled"`
	Setting  string `json:"setting"`            // whose setting it is: the replica's or the tenant's
	Percent  int    `json:"percent,omitempty"`  // canaries by node ID hash
	Selector string `json:"selector,omitempty"` // canaries by label selector
	Bake     string `json:"bake,omitempty"`
	// MaxNACKRatio is the share of canaries that may reject the candidate
	// without aborting the rollout.
	MaxNACKRatio float64   `json:"maxNackRatio,omitempty"`
	Stable       string    `json:"stable"`              // served to every proxy but the canaries
	Candidate    string    `json:"candidate,omitempty"` // served to the canaries
	Since        time.Time `json:"since,omitzero"`
	Held         string    `json:"held,omitempty"` // the last version taken back, not tried again
	HeldWhy      string    `json:"heldWhy,omitempty"`
	// Fetched: the candidate is the tenant's owner's, fetched; this
	// replica serves it to its own canaries and tells the owner what they
	// make of it. Only the owner promotes or aborts.
	Fetched bool `json:"fetchedFromOwner,omitempty"`
}

// DNSAnswer is /debug/dnsz: what a proxy's tenant resolves a host to, or
// why it does not.
type DNSAnswer struct {
	Host      string   `json:"host"`
	Proxy     string   `json:"proxy,omitempty"`
	Node      string   `json:"node,omitempty"`
	Namespace string   `json:"namespace"`
	Tenant    string   `json:"tenant"`
	NDS       string   `json:"nds,omitempty"` // the proxy's name table sync state
	Tried     []string `json:"tried"`
	Resolves  bool     `json:"resolves"`
	FQDN      string   `json:"fqdn,omitempty"`
	IPs       []string `json:"ips,omitempty"`
	Registry  string   `json:"registry,omitempty"`
	Reasons   []string `json:"reasons,omitempty"` // why it does not resolve
	Notes     []string `json:"notes,omitempty"`   // about the proxy's table itself
}

// Member is a row of /debug/members: a replica, its peer address, the
// proxy streams it reported (Leases), and the tenants it owns.
type Member struct {
	ID      string `json:"id"`
	Addr    string `json:"peerAddr"`
	Self    bool   `json:"self,omitempty"`
	Streams *int   `json:"streams,omitempty"`
	Owns    int    `json:"ownedTenants"`
}
