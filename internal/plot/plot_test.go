package plot

import (
	"encoding/xml"
	"strings"
	"testing"
)

// TestCDFIsWellFormedSVG draws linear and logarithmic plots, an empty
// series among them, and checks each is one well-formed SVG element named
// for screen readers, with one line per series that has points.
func TestCDFIsWellFormedSVG(t *testing.T) {
	series := []Series{FromSamples("a <b>", []float64{1, 2, 3, 40}), {Name: "empty"}, {Name: "c", X: []float64{0.5, 5, 50}, Y: []float64{0.2, 0.9, 1}}}
	for _, log := range []bool{false, true} {
		svg := string(CDF("latency & more", "ms", log, series))
		if err := xml.Unmarshal([]byte(svg), new(struct{})); err != nil {
			t.Fatalf("log=%v: not well-formed: %v\n%s", log, err, svg)
		}
		if n := strings.Count(svg, "<polyline"); n != 2 {
			t.Fatalf("log=%v: %d lines, want 2 (the empty series draws none)", log, n)
		}
		if !strings.Contains(svg, `role="img" aria-label="latency &amp; more"`) || !strings.Contains(svg, "a &lt;b&gt;") {
			t.Fatalf("log=%v: label or escaped name missing:\n%s", log, svg)
		}
	}
}
