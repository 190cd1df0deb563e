package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdshard/xdshard/server"
	"github.com/xdshard/xdshard/server/admin"
	"github.com/xdshard/xdshard/snapshot/source/manifest"
)

// syncBuffer is a log sink tests read while the replica writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) count(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), sub)
}

func startReplicaLogged(t *testing.T, dir string) (*server.Replica, *syncBuffer) {
	t.Helper()
	r, _, logs := startReplicaSource(t, dir)
	return r, logs
}

// startReplicaSource is startReplicaLogged that also returns its source,
// whose Applied says when a file written is read.
func startReplicaSource(t *testing.T, dir string) (*server.Replica, *manifest.Source, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	src := manifest.NewSource(dir, log)
	src.Limits.Settle = 20 * time.Millisecond
	return startWith(t, src, log), src, logs
}

func getJSON(t *testing.T, r *server.Replica, path string, v any) {
	t.Helper()
	resp, err := http.Get("http://" + r.AdminAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("%s: %v in %s", path, err, body)
	}
}

type statusz struct {
	Status  string   `json:"status"`
	Reasons []string `json:"reasons"`
}

// eventually waits until ok holds; it fails only on a hang (hangCheck).
func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangCheck)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("never (waited %s: it hangs): %s", hangCheck, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const poisonService = `
apiVersion: v1
kind: Service
metadata: {name: huge, namespace: acme-web}
spec:
  clusterIP: 10.96.9.9
  ports: [{name: http, port: 70000}]
`

// TestBadConfigIsVisibleAndCostsOnlyItself: a replica started with an
// object Envoy would reject and a file that does not parse becomes ready
// (before, serve exited 1 and crash-looped), serves every tenant, shows
// the problems in /debug/tenantz (the unparseable file in the mesh-wide
// section, since it names no namespace), says "degraded" in /statusz
// while /readyz stays 200, logs each problem once at WARN and once when it
// clears, and counts them in xdshard_config_diagnostics.
func TestBadConfigIsVisibleAndCostsOnlyItself(t *testing.T) {
	dir := copyDemo(t)
	writeAtomic(t, filepath.Join(dir, "90-poison.yaml"), poisonService)
	writeAtomic(t, filepath.Join(dir, "91-broken.yaml"), "apiVersion: v1\nkind: [unterminated\n")
	r, logs := startReplicaLogged(t, dir)

	if got := strings.Join(r.Tenants(), ","); got != "acme,globex,initech,istio-system" {
		t.Fatalf("tenants %s", got)
	}
	var tz admin.Tenantz
	getJSON(t, r, "/debug/tenantz", &tz)
	if len(tz.MeshWide.Diagnostics) != 1 || tz.MeshWide.Diagnostics[0].Origin == "" || !strings.Contains(tz.MeshWide.Diagnostics[0].Origin, "91-broken.yaml") {
		t.Fatalf("mesh-wide diagnostics %+v, want the broken file's", tz.MeshWide.Diagnostics)
	}
	leftOut := false
	for _, ts := range tz.Tenants {
		for _, d := range ts.Diagnostics {
			if ts.Tenant == "acme" && d.Object == "Service acme-web/huge" && strings.Contains(d.Message, "left out") {
				leftOut = true
			}
		}
	}
	if !leftOut {
		t.Fatalf("acme's status does not show the poison Service left out: %+v", tz.Tenants)
	}
	var st statusz
	getJSON(t, r, "/statusz", &st)
	if st.Status != "degraded" || len(st.Reasons) == 0 {
		t.Fatalf("/statusz %+v, want degraded with reasons", st)
	}
	resp, err := http.Get("http://" + r.AdminAddr() + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/readyz %v %v, want 200: proxies must keep their config", resp.Status, err)
	}
	resp.Body.Close()
	if n := metric(t, r, "xdshard_config_diagnostics", map[string]string{"kind": "file", "severity": "error"}); n != 1 {
		t.Errorf("xdshard_config_diagnostics{kind=file,severity=error} = %v, want 1", n)
	}
	if n := logs.count("Service acme-web/huge: left out"); n != 1 {
		t.Errorf("the poison was logged %d times, want once", n)
	}

	// Fixing both clears them, once each, and the replica is serving.
	writeAtomic(t, filepath.Join(dir, "90-poison.yaml"), strings.Replace(poisonService, "70000", "7000", 1))
	writeAtomic(t, filepath.Join(dir, "91-broken.yaml"), "# fixed\n")
	eventually(t, "/statusz says serving", func() bool {
		getJSON(t, r, "/statusz", &st)
		return st.Status == "serving"
	})
	if n := logs.count("config problem cleared"); n < 2 {
		t.Errorf("%d problems logged as cleared, want both", n)
	}
	if n := logs.count("Service acme-web/huge: left out"); n != 2 {
		t.Errorf("the poison appears %d times in the logs, want twice (appeared, cleared)", n)
	}
}

// metric reads the value of a replica's gauge or counter name whose
// labels include want; 0 when it has no such sample.
func metric(t *testing.T, r *server.Replica, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := r.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	samples:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue samples
				}
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
