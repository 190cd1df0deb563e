package admin

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xdshard/xdshard/server/xds"
	"github.com/xdshard/xdshard/snapshot"
)

// TestOperatorPageIsAuthorized: the page answers only what the admin
// port's authorization lets through, and / alone: another unknown path is
// still 404. (Its content is tested in a real Chromium against a real
// replica: server/operator_page_test.go.)
func TestOperatorPageIsAuthorized(t *testing.T) {
	allow := false
	h := Handler(Options{
		Gatherer: prometheus.NewRegistry(),
		Ready:    func() (bool, string) { return true, "" },
		Health:   func() (string, []string) { return "serving", nil },
		MeshWide: func() []snapshot.Diagnostic { return nil },
		Authorize: func(*http.Request) (int, error) {
			if allow {
				return 0, nil
			}
			return http.StatusForbidden, errors.New("not an operator")
		},
		Owner:    func(string) (string, string) { return "", "" },
		Clients:  func() []xds.ClientStatus { return nil },
		Replica:  "xdshard-test",
		Store:    snapshot.NewStore(0),
		Failures: func() map[string]error { return nil },
	})
	get := func(path string) (int, string) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		return w.Code, w.Body.String()
	}
	if code, body := get("/"); code != http.StatusForbidden || strings.Contains(body, "<html") {
		t.Fatalf("unauthorized GET /: %d %q, want 403 and no page", code, body)
	}
	allow = true
	if code, body := get("/"); code != http.StatusOK || !strings.Contains(body, `<html lang="en">`) || !strings.Contains(body, "xdshard-test") {
		t.Fatalf("authorized GET /: %d %q", code, body)
	}
	if code, _ := get("/nothing-here"); code != http.StatusNotFound {
		t.Fatalf("GET /nothing-here: %d, want 404", code)
	}
}
