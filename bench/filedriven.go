package bench

import (
	"fmt"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/bench/proxy"
	"github.com/xdshard/xdshard/snapshot/model"
)

// The file-driven run (Config.FileDriven) measures xdshard as it runs from
// files: `xdshard serve --config DIR` in its own process, every churn event
// a tenant file rewritten atomically (DIR/NS.yaml.tmp written, then renamed
// to DIR/NS.yaml), while each baseline is given the same changes from
// memory, as in the default run.

// fileEvents are the file-driven run's events. Each names the objects that
// change; the file target rewrites the files of their namespaces, a
// baseline applies them.
func fileEvents(cfg Config) []event {
	all := func(*proxy.Proxy) bool { return true }
	return []event{
		{"idle tenant's file (endpoints)", func(gen int) []model.Change { return fleet.ScaleEndpoints(0, 0, cfg.Endpoints, gen) },
			func(p *proxy.Proxy) bool { return p.Namespace == fleet.Tenant(0) }, proxy.EDS},
		{"every tenant's file (weights)", func(gen int) []model.Change { return everyWeight(cfg, 10+gen%80) }, all, proxy.RDS},
		{"istio-system's file (mesh-wide)", func(gen int) []model.Change { return fleet.MeshWide(gen) }, all, proxy.EDS},
	}
}

// everyWeight rewrites every VirtualService of every tenant (the fleet
// gives one to three services in four) to weight.
func everyWeight(cfg Config, weight int) []model.Change {
	var out []model.Change
	for i := 0; i < cfg.Tenants; i++ {
		for j := 0; j < cfg.Services; j++ {
			if j%4 != 3 {
				out = append(out, model.Adds([]*model.Object{fleet.VirtualService(fleet.Tenant(i), fmt.Sprintf("svc-%02d", j), weight)})...)
			}
		}
	}
	return out
}

// eventsFor is the run's events: the file-driven ones or the default.
func eventsFor(cfg Config) []event {
	if cfg.FileDriven {
		return fileEvents(cfg)
	}
	return events(cfg)
}
