package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/xdshard/xdshard/bench"
	"github.com/xdshard/xdshard/bench/baseline"
)

func benchCmd(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	cfg := bench.Config{}
	fs.IntVar(&cfg.Proxies, "proxies", 1000, "simulated proxies (ADS streams)")
	fs.IntVar(&cfg.Tenants, "tenants", 100, "tenants in the synthetic fleet")
	fs.IntVar(&cfg.Services, "services", 20, "services per tenant")
	fs.IntVar(&cfg.Endpoints, "endpoints", 5, "endpoints per service")
	mode := fs.String("mode", "sotw", "sotw or delta")
	baselines := fs.String("baseline", "b", "go-control-plane baselines to run: a (snapshot per node), b (per tenant, per-type versions), both, none")
	fs.DurationVar(&cfg.Debounce, "debounce", 100*time.Millisecond, "xdshard's debounce quiet time")
	fs.DurationVar(&cfg.Timeout, "timeout", 2*time.Minute, "longest wait for a phase (initial sync, one event)")
	fs.IntVar(&cfg.StreamsPerConn, "streams-per-conn", 250, "proxy streams sharing one gRPC connection")
	seed := fs.Uint64("seed", 1, "fleet seed")
	jsonOut := fs.String("json", "", "also write the results as JSON to this file")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: xdshard bench [flags]\n\nRuns xdshard and go-control-plane in this process on the same synthetic fleet with the same\nsimulated proxies and churn (endpoints in one tenant, weights in one tenant, a mesh-wide change),\nand prints convergence times, CPU and their ratios. Load goes to 127.0.0.1 only.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench takes no arguments, got %q", fs.Args())
	}
	cfg.Seed = *seed
	switch *mode {
	case "sotw":
	case "delta":
		cfg.Delta = true
	default:
		return fmt.Errorf("--mode %q: want sotw or delta", *mode)
	}
	switch *baselines {
	case "a":
		cfg.Baselines = []baseline.Mode{baseline.ModePerNode}
	case "b":
		cfg.Baselines = []baseline.Mode{baseline.ModePerTenant}
	case "both":
		cfg.Baselines = []baseline.Mode{baseline.ModePerTenant, baseline.ModePerNode}
	case "none":
	default:
		return fmt.Errorf("--baseline %q: want a, b, both or none", *baselines)
	}
	if cfg.Proxies <= 0 || cfg.Tenants <= 0 || cfg.Services <= 0 || cfg.Endpoints <= 0 || cfg.Tenants > 250 {
		return fmt.Errorf("--proxies, --services, --endpoints must be positive and --tenants 1-250")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	fmt.Fprintf(os.Stderr, "xdshard bench: %d proxies over %d tenants (%s)\n", cfg.Proxies, cfg.Tenants, *mode)
	rs, err := bench.Run(ctx, cfg, os.Stderr)
	if len(rs) > 0 {
		if werr := bench.WriteTable(os.Stdout, cfg, rs); werr != nil {
			return werr
		}
	}
	if err != nil {
		return err
	}
	if *jsonOut != "" {
		f, err := os.Create(*jsonOut)
		if err != nil {
			return err
		}
		defer f.Close()
		return bench.WriteJSON(f, cfg, rs)
	}
	return nil
}
