package xds

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xdshard/xdshard/snapshot"
)

// Metrics of the server and of the push pipeline. Labels are types, views
// and stages only: never a proxy, node, stream or tenant (unbounded).
// Names follow istiod's pilot/pkg/xds/monitoring.go where the meaning is
// the same, so existing dashboards carry over.
type Metrics struct {
	pushes   *prometheus.CounterVec   // pilot_xds_pushes{type}
	rejects  *prometheus.CounterVec   // pilot_total_xds_rejects{type}
	stales   *prometheus.CounterVec   // xdshard_xds_stale_requests{type}
	conns    *prometheus.GaugeVec     // pilot_xds{view,mode}
	sendTime *prometheus.HistogramVec // pilot_xds_send_time{type}
	bytes    *prometheus.CounterVec   // pilot_xds_config_size_bytes_total{type}
	stages   *prometheus.HistogramVec // xdshard_push_stage_seconds{stage}
	inflight prometheus.Gauge         // xdshard_pushes_in_flight
	queued   prometheus.Gauge         // xdshard_pushes_queued
	repicked prometheus.Counter       // xdshard_push_repicks_total
	shed     prometheus.Counter       // xdshard_shed_streams_total
	partial  *prometheus.CounterVec   // xdshard_xds_partial_pushes_total{type}
	resumed  *prometheus.CounterVec   // xdshard_xds_resumed_total{type}

	partialEDS, partialRDS prometheus.Counter // partial's two series, resolved once: counted under a stream's lock
}

var stageBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

func newMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		pushes:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pilot_xds_pushes", Help: "Responses sent, by type."}, []string{"type"}),
		rejects:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pilot_total_xds_rejects", Help: "Responses NACKed by clients, by type."}, []string{"type"}),
		stales:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xdshard_xds_stale_requests", Help: "Requests answering an older response, ignored, by type."}, []string{"type"}),
		conns:    prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pilot_xds", Help: "Connected streams, by view and mode (sotw, delta)."}, []string{"view", "mode"}),
		sendTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pilot_xds_send_time", Help: "Time to send one response, by type.", Buckets: stageBuckets}, []string{"type"}),
		bytes:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pilot_xds_config_size_bytes_total", Help: "Bytes of responses sent, by type."}, []string{"type"}),
		stages:   prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "xdshard_push_stage_seconds", Help: "Time spent per push stage: source (a file source reading and decoding, from its first watcher event), debounce, build, publish, queue, send, ack.", Buckets: stageBuckets}, []string{"stage"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "xdshard_pushes_in_flight", Help: "Streams encoding or sending a push now; at most the push concurrency (--push-concurrency)."}),
		queued:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "xdshard_pushes_queued", Help: "Streams waiting for a push slot; slots go to the narrowest change first (the fewest tenants built together), then in arrival order."}),
		repicked: prometheus.NewCounter(prometheus.CounterOpts{Name: "xdshard_push_repicks_total", Help: "Streams that, while waiting for a push slot, got a version of a narrower change and queued again with it."}),
		shed:     prometheus.NewCounter(prometheus.CounterOpts{Name: "xdshard_shed_streams_total", Help: "Proxy streams ended to rebalance replicas (this replica held more than ceil(streams/members x 1.1))."}),
		resumed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xdshard_xds_resumed_total",
			Help: "State-of-the-world streams whose first request for a wildcard type (CDS, LDS, the name table) named the version served, so nothing was sent again, by type."}, []string{"type"}),
		partial: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xdshard_xds_partial_pushes_total", Help: "State-of-the-world responses that carried only the resources changed since the client's last ACKed response (EDS and RDS; serve --full-sotw turns them off), by type."}, []string{"type"}),
	}
	// A second server on one registry (the peer face beside the proxies')
	// shares the collectors already registered.
	m.pushes = register(reg, m.pushes)
	m.rejects = register(reg, m.rejects)
	m.stales = register(reg, m.stales)
	m.conns = register(reg, m.conns)
	m.sendTime = register(reg, m.sendTime)
	m.bytes = register(reg, m.bytes)
	m.stages = register(reg, m.stages)
	m.inflight = register(reg, m.inflight)
	m.queued = register(reg, m.queued)
	m.repicked = register(reg, m.repicked)
	m.shed = register(reg, m.shed)
	m.partial = register(reg, m.partial)
	m.resumed = register(reg, m.resumed)
	m.partialEDS, m.partialRDS = m.partial.WithLabelValues("eds"), m.partial.WithLabelValues("rds")
	return m
}

// typeLabel shortens a type URL to its well-known name (cds, eds, ...).
func typeLabel(t string) string {
	switch t {
	case snapshot.ClusterType:
		return "cds"
	case snapshot.EndpointType:
		return "eds"
	case snapshot.ListenerType:
		return "lds"
	case snapshot.RouteType:
		return "rds"
	case snapshot.NameTableType:
		return "nds"
	}
	return "other"
}

// Stage records a push-stage duration; builders report debounce, build and
// publish through it, the server queue, send and ack.
func (m *Metrics) Stage(stage string, d time.Duration) { m.stage(stage, d) }

func (m *Metrics) stage(stage string, d time.Duration) {
	m.stages.WithLabelValues(stage).Observe(d.Seconds())
}

func (m *Metrics) sent(t string, size int, d time.Duration) {
	l := typeLabel(t)
	m.pushes.WithLabelValues(l).Inc()
	m.bytes.WithLabelValues(l).Add(float64(size))
	m.sendTime.WithLabelValues(l).Observe(d.Seconds())
	m.stage("send", d)
}

// partialPush counts a partial response of t (EDS or RDS, partialType).
func (m *Metrics) partialPush(t string) {
	if t == snapshot.RouteType {
		m.partialRDS.Inc()
		return
	}
	m.partialEDS.Inc()
}

func (m *Metrics) ack(t string, d time.Duration) { m.stage("ack", d) }
func (m *Metrics) nack(t string)                 { m.rejects.WithLabelValues(typeLabel(t)).Inc() }
func (m *Metrics) stale(t string)                { m.stales.WithLabelValues(typeLabel(t)).Inc() }

func (m *Metrics) connected(v snapshot.View, delta bool, n float64) {
	mode := "sotw"
	if delta {
		mode = "delta"
	}
	m.conns.WithLabelValues(string(v), mode).Add(n)
}

// register registers c, or returns the collector of the same name already
// registered.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		if already, ok := err.(prometheus.AlreadyRegisteredError); ok {
			if existing, ok := already.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}
