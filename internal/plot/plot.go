package plot

import (
	"bytes"
	"fmt"
	"html/template"
	"math"
)

// Series is one line: points (X ascending, Y the cumulative fraction at
// X, from 0 to 1).
type Series struct {
	Name string
	X, Y []float64
}

// FromSamples is the distribution of sorted samples: the fraction at or
// below each.
func FromSamples(name string, sorted []float64) Series {
	s := Series{Name: name, X: sorted, Y: make([]float64, len(sorted))}
	for i := range sorted {
		s.Y[i] = float64(i+1) / float64(len(sorted))
	}
	return s
}

// Colors are the series' colours, in turn.
var Colors = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"}

// CDF draws the series on one plot: x in unit (linear from 0, or, with
// log, logarithmic from the smallest X), y the fraction at or below x.
// label names the plot for screen readers.
func CDF(label, unit string, log bool, series []Series) template.HTML {
	const w, h, pad = 480.0, 300.0, 50.0
	minX, maxX := math.Inf(1), 0.0
	for _, s := range series {
		for _, x := range s.X {
			maxX = math.Max(maxX, x)
			if x > 0 {
				minX = math.Min(minX, x)
			}
		}
	}
	if maxX == 0 {
		maxX = 1
	}
	if math.IsInf(minX, 1) || minX >= maxX {
		minX = maxX / 10
	}
	at := func(x float64) float64 {
		if !log {
			return pad + (w-pad)*x/maxX
		}
		x = math.Max(x, minX)
		return pad + (w-pad)*math.Log(x/minX)/math.Log(maxX/minX)
	}
	tick := func(i int) float64 {
		if !log {
			return maxX * float64(i) / 4
		}
		return minX * math.Pow(maxX/minX, float64(i)/4)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="%s" width="%.0f" height="%.0f" font-size="11"><title>%s</title>`,
		template.HTMLEscapeString(label), w+pad, h+pad, template.HTMLEscapeString(label))
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#000"/>`, pad, h, w, h)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="10" x2="%.0f" y2="%.0f" stroke="#000"/>`, pad, pad, h)
	for i := 0; i <= 4; i++ {
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">%s %s</text>`, pad+(w-pad)*float64(i)/4, h+15, number(tick(i)), unit)
		y := h - (h-10)*float64(i)/4
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="end">%d%%</text>`, pad-4, y+4, i*25)
	}
	for i, s := range series {
		if len(s.X) == 0 {
			continue
		}
		color := Colors[i%len(Colors)]
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="`, color)
		step := max(len(s.X)/400, 1)
		for j := 0; j < len(s.X); j += step {
			fmt.Fprintf(&b, "%.1f,%.1f ", at(s.X[j]), h-(h-10)*s.Y[j])
		}
		last := len(s.X) - 1
		fmt.Fprintf(&b, "%.1f,%.1f", at(s.X[last]), h-(h-10)*s.Y[last])
		fmt.Fprintf(&b, `"/><text x="%.0f" y="%.0f" fill="%s">%s</text>`, pad+10, 24+14*float64(i), color, template.HTMLEscapeString(s.Name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// number prints a tick: no decimals from 10 up, fewer digits below.
func number(v float64) string {
	switch {
	case v >= 10 || v == 0:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2g", v)
}
