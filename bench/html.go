package bench

import (
	"bytes"
	"fmt"
	"html/template"
	"math"
	"os"
	"path/filepath"
)

// WriteHTML writes DIR/index.html: the results table and, per phase, the
// latency CDF of every server as an inline SVG plot, to open in a browser.
func WriteHTML(dir string, cfg Config, rs []Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var table bytes.Buffer
	if err := WriteTable(&table, cfg, rs); err != nil {
		return err
	}
	type plot struct {
		Title string
		SVG   template.HTML
	}
	var plots []plot
	if len(rs) > 0 {
		plots = append(plots, plot{"Initial sync", cdf(rs, func(r Result) []float64 { return r.SyncMs })})
		for i, e := range rs[0].Events {
			plots = append(plots, plot{e.Name, cdf(rs, func(r Result) []float64 {
				if i < len(r.Events) {
					return r.Events[i].Ms
				}
				return nil
			})})
		}
	}
	var out bytes.Buffer
	err := page.Execute(&out, map[string]any{"Table": table.String(), "Plots": plots})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "index.html"), out.Bytes(), 0o644)
}

var page = template.Must(template.New("report").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>xdshard bench</title>
<style>body{font-family:sans-serif;margin:2em}pre{background:#f6f6f6;padding:1em;overflow:auto}
.plot{display:inline-block;margin:1em}h2{font-size:1.1em}</style></head><body>
<h1>xdshard bench</h1><pre>{{.Table}}</pre>
{{range .Plots}}<div class="plot"><h2>{{.Title}}: latency CDF</h2>{{.SVG}}</div>{{end}}
</body></html>
`))

var colors = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd"}

// cdf draws one cumulative distribution per server: x latency in ms,
// y the fraction of proxies at or below it.
func cdf(rs []Result, samples func(Result) []float64) template.HTML {
	const w, h, pad = 480.0, 300.0, 50.0
	maxX := 0.0
	for _, r := range rs {
		if s := samples(r); len(s) > 0 {
			maxX = math.Max(maxX, s[len(s)-1])
		}
	}
	if maxX == 0 {
		maxX = 1
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-size="11">`, w+pad, h+pad)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#000"/>`, pad, h, w, h)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="10" x2="%.0f" y2="%.0f" stroke="#000"/>`, pad, pad, h)
	for i := 0; i <= 4; i++ {
		x := pad + (w-pad)*float64(i)/4
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">%.0f ms</text>`, x, h+15, maxX*float64(i)/4)
		y := h - (h-10)*float64(i)/4
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="end">%d%%</text>`, pad-4, y+4, i*25)
	}
	for i, r := range rs {
		s := samples(r)
		if len(s) == 0 {
			continue
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="`, colors[i%len(colors)])
		step := max(len(s)/400, 1)
		for j := 0; j < len(s); j += step {
			fmt.Fprintf(&b, "%.1f,%.1f ", pad+(w-pad)*s[j]/maxX, h-(h-10)*float64(j+1)/float64(len(s)))
		}
		fmt.Fprintf(&b, "%.1f,%.1f", pad+(w-pad)*s[len(s)-1]/maxX, 10.0)
		fmt.Fprintf(&b, `"/><text x="%.0f" y="%.0f" fill="%s">%s</text>`, pad+10, 24+14*float64(i), colors[i%len(colors)], template.HTMLEscapeString(r.Server))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}
