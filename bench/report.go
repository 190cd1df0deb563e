package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable prints the results, and each baseline's figures as a ratio
// xdshard/baseline (below 1: xdshard is faster or cheaper).
func WriteTable(w io.Writer, cfg Config, rs []Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	mode := "sotw"
	if cfg.Delta {
		mode = "delta"
	}
	fmt.Fprintf(tw, "fleet: %d proxies (%s), %d tenants x %d services x %d endpoints; xdshard debounce %s\n\n",
		cfg.Proxies, mode, cfg.Tenants, cfg.Services, cfg.Endpoints, cfg.Debounce)
	if cfg.FileDriven {
		fmt.Fprintf(tw, "file-driven: xdshard runs `xdshard serve --config DIR`, each event tenant files renamed into place; the baselines get the same changes from memory\n\n")
	}
	cpuHead := "CPU s (server+load)"
	if len(rs) > 0 && rs[0].Isolated {
		cpuHead = "server CPU s"
	}
	fmt.Fprintf(tw, "SERVER\tPHASE\tPROXIES\tp50\tp90\tp99\tmax\t%s\n", cpuHead)
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\tinitial sync\t%d\t%s\t%s\t%s\t%s\t%.2f\n", r.Server, r.Proxies, ms(r.InitialSync.P50), ms(r.InitialSync.P90), ms(r.InitialSync.P99), ms(r.InitialSync.Max), r.SyncCPU)
		for _, e := range r.Events {
			c := e.Convergence
			fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\t%.3f\n", r.Server, e.Name, e.Converged, e.Affected, ms(c.P50), ms(c.P90), ms(c.P99), ms(c.Max), e.CPUSeconds)
		}
	}
	for _, r := range rs {
		for _, e := range r.Events {
			if len(e.Stages) == 0 {
				continue
			}
			fmt.Fprintf(tw, "%s\tstages: %s\t", r.Server, e.Name)
			for _, stage := range []string{"debounce", "build", "publish", "queue", "send", "ack"} {
				if st, ok := e.Stages[stage]; ok {
					fmt.Fprintf(tw, " %s %.1fms x%d", stage, st.MeanMs, st.Count)
				}
			}
			fmt.Fprintln(tw)
		}
	}
	for _, r := range rs {
		writeNarrowInBroad(tw, r)
	}
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\tsent, NACKs\t%d\t%.1f MiB, %d NACKs received", r.Server, r.Proxies, float64(r.BytesSent)/(1<<20), r.NACKs)
		if r.LoadCPU > 0 {
			fmt.Fprintf(tw, ", load generator %.2f CPU s", r.LoadCPU)
		}
		fmt.Fprintln(tw)
		if sr := r.Soak; sr != nil {
			fmt.Fprintf(tw, "%s\tsoak, %.0f s\t%d\t%d changes in %d rounds; %d of %d convergences missed, worst round p99 %.1f ms; heap %.1f MiB at the start, %.1f once the histories filled, %.1f at the end; goroutines %d -> %d\n",
				r.Server, sr.Seconds, r.Proxies, sr.Changes, sr.Rounds, sr.Unconverged, sr.Checked, sr.WorstP99Ms,
				float64(sr.HeapStart)/(1<<20), float64(sr.HeapWarm)/(1<<20), float64(sr.HeapEnd)/(1<<20), sr.GoroutinesStart, sr.GoroutinesEnd)
		}
		if r.HeapPerProxy > 0 {
			fmt.Fprintf(tw, "%s\theap per synced proxy\t%d\t%.1f KiB beyond the snapshots (heap in use after the initial sync less before it); live objects %.1f KiB\n", r.Server, r.Proxies, float64(r.HeapPerProxy)/1024, float64(r.LivePerProxy)/1024)
		}
		if r.RSSBytes > 0 {
			fmt.Fprintf(tw, "%s\tRSS, heap at the end\t%d\t%.0f MiB, %.1f KiB per proxy; heap %.0f MiB\n", r.Server, r.Proxies, float64(r.RSSBytes)/(1<<20), float64(r.RSSBytes)/1024/float64(r.Proxies), float64(r.HeapBytes)/(1<<20))
		}
	}
	if len(rs) > 1 {
		fmt.Fprintln(tw, "\nRATIO xdshard/baseline\tPHASE\t\tp50\t\tp99\t\tCPU")
		x := rs[0]
		for _, b := range rs[1:] {
			fmt.Fprintf(tw, "vs %s\tinitial sync\t\t%s\t\t%s\t\t%s\n", b.Server, ratio(x.InitialSync.P50, b.InitialSync.P50), ratio(x.InitialSync.P99, b.InitialSync.P99), fratio(x.SyncCPU, b.SyncCPU))
			for i := range x.Events {
				if i < len(b.Events) {
					fmt.Fprintf(tw, "vs %s\t%s\t\t%s\t\t%s\t\t%s\n", b.Server, x.Events[i].Name, ratio(x.Events[i].Convergence.P50, b.Events[i].Convergence.P50),
						ratio(x.Events[i].Convergence.P99, b.Events[i].Convergence.P99), fratio(x.Events[i].CPUSeconds, b.Events[i].CPUSeconds))
				}
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if cfg.FileDriven {
		writeFileDriven(w, rs)
	}
	return nil
}

// WriteJSON writes the results for machines.
func WriteJSON(w io.Writer, cfg Config, rs []Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{"config": cfg, "results": rs})
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }

func ratio(a, b time.Duration) string { return fratio(a.Seconds(), b.Seconds()) }

func fratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// writeNarrowInBroad prints, for the phase that makes a one-tenant change
// during a mesh-wide push, how much of that push was still in flight and
// when the push ended, beside the mesh-wide change pushed alone.
func writeNarrowInBroad(w io.Writer, r Result) {
	var alone, with *EventResult
	for i := range r.Events {
		switch e := &r.Events[i]; {
		case e.Name == "mesh-wide again, alone":
			alone = e
		case strings.HasPrefix(e.Name, "mesh-wide, a one-tenant"):
			with = e
		}
	}
	if alone == nil || with == nil {
		return
	}
	fmt.Fprintf(w, "%s\tone tenant during mesh-wide\t%d\tthe change was made with %d of %d proxies still waiting for the mesh-wide push; that push ended at %s (p99 %s), the same change pushed alone just before at %s (p99 %s)\n",
		r.Server, with.Affected, with.InFlight, with.Affected, ms(with.Convergence.Max), ms(with.Convergence.P99), ms(alone.Convergence.Max), ms(alone.Convergence.P99))
}
