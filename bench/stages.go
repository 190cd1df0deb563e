package bench

import (
	"github.com/prometheus/client_golang/prometheus"
)

// stageMetric is the server's push-stage histogram.
const stageMetric = "xdshard_push_stage_seconds"

// StageStat is one push stage during an event, from the server's own
// histogram: how often it ran and its mean and total time.
type StageStat struct {
	Count   uint64  `json:"count"`
	MeanMs  float64 `json:"meanMs"`
	TotalMs float64 `json:"totalMs"`
}

// stageSums reads the cumulative count and sum of each stage.
func stageSums(g prometheus.Gatherer) map[string][2]float64 {
	out := map[string][2]float64{}
	mfs, err := g.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		if mf.GetName() != stageMetric {
			continue
		}
		for _, m := range mf.GetMetric() {
			stage := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "stage" {
					stage = l.GetValue()
				}
			}
			h := m.GetHistogram()
			out[stage] = [2]float64{float64(h.GetSampleCount()), h.GetSampleSum()}
		}
	}
	return out
}

// stageDelta turns two readings into per-stage figures for what happened
// between them.
func stageDelta(before, after map[string][2]float64) map[string]StageStat {
	if len(after) == 0 {
		return nil
	}
	out := map[string]StageStat{}
	for stage, a := range after {
		b := before[stage]
		n := a[0] - b[0]
		if n <= 0 {
			continue
		}
		total := (a[1] - b[1]) * 1000
		out[stage] = StageStat{Count: uint64(n), MeanMs: total / n, TotalMs: total}
	}
	return out
}

// counterSum adds up every series of a counter.
func counterSum(g prometheus.Gatherer, name string) uint64 {
	mfs, err := g.Gather()
	if err != nil {
		return 0
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return uint64(total)
}
