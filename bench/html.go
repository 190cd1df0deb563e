package bench

import (
	"bytes"
	"html/template"
	"os"
	"path/filepath"

	"github.com/xdshard/xdshard/internal/plot"
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
	type figure struct {
		Title string
		SVG   template.HTML
	}
	var plots []figure
	if len(rs) > 0 {
		plots = append(plots, figure{"Initial sync", cdf("Initial sync", rs, func(r Result) []float64 { return r.SyncMs })})
		for i, e := range rs[0].Events {
			plots = append(plots, figure{e.Name, cdf(e.Name, rs, func(r Result) []float64 {
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

// cdf draws one cumulative distribution per server: x latency in ms,
// y the fraction of proxies at or below it.
func cdf(label string, rs []Result, samples func(Result) []float64) template.HTML {
	var series []plot.Series
	for _, r := range rs {
		series = append(series, plot.FromSamples(r.Server, samples(r)))
	}
	return plot.CDF(label+": latency CDF", "ms", false, series)
}
