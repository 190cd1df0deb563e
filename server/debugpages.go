package server

import (
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// debugPages are the admin pages `istioctl x internal-debug PAGE` may
// read over the xDS port (read-only ones; the caller was authorized there).
var debugPages = []string{"syncz", "tenantz", "statusz", "history", "rollout", "dnsz", "members"}

// debugPage serves one admin page in process, as the admin port would.
func (r *Replica) debugPage(page string) ([]byte, error) {
	if len(page) > 512 {
		return nil, fmt.Errorf("debug page name of %d bytes; at most 512", len(page))
	}
	name, query, _ := strings.Cut(page, "?")
	if !slices.Contains(debugPages, name) {
		return nil, fmt.Errorf("debug page %q is not served; pages: %s", name, strings.Join(debugPages, ", "))
	}
	path := "/debug/" + name
	if name == "statusz" {
		path = "/statusz"
	}
	req, err := http.NewRequest(http.MethodGet, path+"?"+query, nil)
	if err != nil {
		return nil, fmt.Errorf("debug page %q: %w", page, err)
	}
	w := &pageWriter{header: http.Header{}}
	r.pages.ServeHTTP(w, req)
	if w.code != 0 && w.code != http.StatusOK {
		return nil, fmt.Errorf("debug page %q: %d %s", page, w.code, strings.TrimSpace(w.body.String()))
	}
	return w.body.Bytes(), nil
}

// pageWriter is an http.ResponseWriter into memory.
type pageWriter struct {
	header http.Header
	body   bytes.Buffer
	code   int
}

func (w *pageWriter) Header() http.Header { return w.header }
func (w *pageWriter) Write(b []byte) (int, error) {
	if w.body.Len()+len(b) > 16<<20 {
		return 0, fmt.Errorf("debug page larger than 16 MiB")
	}
	return w.body.Write(b)
}
func (w *pageWriter) WriteHeader(code int) { w.code = code }
