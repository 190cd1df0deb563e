package server_test

import (
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/xdshard/xdshard/server"
)

// sample is the series of metric name in r's registry that has a label
// of value value (any series, for ""), or nil.
func sample(t *testing.T, r *server.Replica, name, value string) *dto.Metric {
	t.Helper()
	mfs, err := r.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if value == "" {
				return m
			}
			for _, l := range m.GetLabel() {
				if l.GetValue() == value {
					return m
				}
			}
		}
	}
	return nil
}

// counterWith is a counter's value for the series labelled value.
func counterWith(t *testing.T, r *server.Replica, name, value string) float64 {
	t.Helper()
	return sample(t, r, name, value).GetCounter().GetValue()
}

// counterNamed is the value of a counter without labels.
func counterNamed(t *testing.T, r *server.Replica, name string) float64 {
	t.Helper()
	return sample(t, r, name, "").GetCounter().GetValue()
}

// histogramCount is the sample count of a histogram's series labelled
// stage.
func histogramCount(t *testing.T, r *server.Replica, name, stage string) uint64 {
	t.Helper()
	return sample(t, r, name, stage).GetHistogram().GetSampleCount()
}

// gaugeNamed is a gauge's or a counter's value; the metric must exist.
func gaugeNamed(t *testing.T, r *server.Replica, name string) float64 {
	t.Helper()
	m := sample(t, r, name, "")
	if m == nil {
		t.Fatalf("no metric %s", name)
	}
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetGauge().GetValue()
}
