package server

import (
	"time"

	"encoding/json"
	"github.com/xdshard/xdshard/snapshot"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ReadyFunc reports whether the process may take traffic, and if not, why.
type ReadyFunc func() (ready bool, reason string)

// AdminHandler serves /healthz, /readyz, /metrics (from gatherer),
// /debug/pprof/, /debug/syncz (every stream's sync state as JSON) and
// /debug/tenantz (every tenant's version, history and diagnostics).
func (s *Server) AdminHandler(gatherer prometheus.Gatherer, ready ReadyFunc) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ok, why := ready(); !ok {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/syncz", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, s.Clients()) })
	mux.HandleFunc("/debug/tenantz", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, s.Tenants()) })
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// TenantStatus is one tenant's served snapshot: its version, when it was
// built, the versions kept for rollback, and the problems with its objects
// (including those rejected because istiod would reject them).
type TenantStatus struct {
	Tenant      string                `json:"tenant"`
	Version     string                `json:"version"`
	Built       time.Time             `json:"built"`
	History     []string              `json:"history"`
	Diagnostics []snapshot.Diagnostic `json:"diagnostics"`
}

// Tenants lists every tenant's status.
func (s *Server) Tenants() []TenantStatus {
	out := []TenantStatus{}
	for _, t := range s.store.Tenants() {
		cur := s.store.Current(t)
		if cur == nil {
			continue
		}
		ts := TenantStatus{Tenant: t, Version: cur.Version, Built: cur.Built, Diagnostics: cur.Diagnostics}
		for _, h := range s.store.History(t) {
			ts.History = append(ts.History, h.Version)
		}
		if ts.Diagnostics == nil {
			ts.Diagnostics = []snapshot.Diagnostic{}
		}
		out = append(out, ts)
	}
	return out
}
