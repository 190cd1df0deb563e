package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/source/manifest"

	"github.com/xdshard/xdshard/bench"
	"github.com/xdshard/xdshard/bench/baseline"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench [flags]",
		Short: "Measure push latency under synthetic load against go-control-plane, in one run",
		Long: `Runs xdshard and go-control-plane in this process on the same synthetic fleet with the same
simulated proxies and churn (endpoints in one tenant, weights in one tenant, a mesh-wide change),
and prints convergence times, CPU and their ratios. Load goes to 127.0.0.1 only.

With --replicas N it then runs N xdshard replicas sharding the tenants (static peers), the same proxies
spread over them and the same events, reports each replica's and the deployment's CPU, builds, peer
bytes and RSS against one replica, and a capacity model; --kill-replica adds a kill -9 failover.

With --file-driven, xdshard runs as xdshard serve --config DIR (this binary) and each event rewrites
tenant files atomically (NS.yaml.tmp renamed to NS.yaml): one idle tenant's, every tenant's (weights;
convergence from the last rename), istio-system's. The baselines get the same changes from memory.`,
		Example: `  # The default fleet: 1,000 proxies of 100 tenants, against go-control-plane
  xdshard bench

  # Changes arriving as file edits to xdshard serve --config DIR
  xdshard bench --file-driven --proxies 500

  # Three replicas sharding the tenants, and a kill -9 failover
  xdshard bench --replicas 3 --kill-replica`,
		Args: noArgs("see xdshard bench --help"),
	}
	run := bindBench(cmd.Flags())
	cmd.RunE = func(*cobra.Command, []string) error { return run() }
	cmd.AddCommand(newBenchGenCmd())
	return cmd
}

// bindBench defines bench's flags on fs; the function returned runs it.
func bindBench(fs *pflag.FlagSet) func() error {
	cfg := bench.Config{}
	fs.IntVar(&cfg.Proxies, "proxies", 1000, "simulated proxies (ADS streams)")
	fs.IntVar(&cfg.Tenants, "tenants", 100, "tenants in the synthetic fleet")
	fs.IntVar(&cfg.Services, "services", 20, "services per tenant")
	fs.IntVar(&cfg.Endpoints, "endpoints", 5, "endpoints per service")
	mode := fs.String("mode", "sotw", "sotw, delta or mix (half each)")
	fs.IntVar(&cfg.Misbehaving, "misbehaving", 0, "add this many proxies that NACK everything, as many that never answer (no ACK, no NACK), as many that read slowly, as many that never read and ask again every 20 ms (each on its own connection), and as many that subscribe to fourteen made-up types besides their own (left out of the figures)")
	baselines := fs.String("baseline", "b", "go-control-plane baselines to run: a (snapshot per node), b (per tenant, per-type versions), both, none")
	fs.DurationVar(&cfg.Debounce, "debounce", 100*time.Millisecond, "xdshard's debounce quiet time")
	fs.BoolVar(&cfg.PushSlotUntilAnswered, "push-slot-until-ack", false, "run xdshard with serve --push-slot-until-ack")
	fs.DurationVar(&cfg.Timeout, "timeout", 2*time.Minute, "longest wait for a phase (initial sync, one event)")
	fs.IntVar(&cfg.StreamsPerConn, "streams-per-conn", 250, "proxy streams sharing one gRPC connection")
	seed := fs.Uint64("seed", 1, "fleet seed")
	fs.StringVar(&cfg.Target, "target", "", "measure a running xdshard at HOST:PORT (serving `xdshard bench gen` output with the same sizes and seed); initial sync only")
	fs.Float64Var(&cfg.Rate, "rate", 0, "after the single events, churn endpoints at this many changes per second (one tenant each, in turn)")
	fs.IntVar(&cfg.RateEvents, "rate-events", 20, "how many changes --rate applies (at most one per tenant)")
	fs.DurationVar(&cfg.Soak, "soak", 0, "after the events, churn endpoints at --rate (default 10/s) over every tenant in turn for this long, check every well-behaved proxy converges on every change, and report the server's heap and goroutines at the start and the end (with --misbehaving, some proxies NACK or read slowly throughout)")
	inProcess := fs.Bool("in-process", false, "run the servers in this process (CPU figures then include the load generator)")
	fs.StringVar(&cfg.CPUProfile, "cpu-profile", "", "write a CPU profile of each server during each event to this directory (SERVER-N.pprof; servers in their own processes; with --replicas, each replica: xdshard_xN-rK-N.pprof)")
	fs.StringVar(&cfg.HeapProfile, "heap-profile", "", "write a heap profile per server at the end of its phase (SERVER-FILE beside FILE), and, for a server in its own process, before its proxies connect and once they synced (SERVER-FILE-idle, SERVER-FILE-synced: go tool pprof -base IDLE SYNCED shows what the proxies cost)")
	fs.IntVar(&cfg.Replicas, "replicas", 0, "also run this many xdshard replicas (at least 2) sharding the tenants with static peers, the proxies spread over them, and compare with one replica")
	fs.BoolVar(&cfg.Symmetric, "symmetric", false, "with --replicas: also run as many replicas that each build every tenant (no peers, as replicated istiods), the same proxies spread over them, and compare the sharded deployment with it")
	fs.BoolVar(&cfg.Directed, "directed", false, "with --replicas: each proxy connects to its tenant's owner instead of round-robin (what streams directed to their owner would give; --symmetric gets the same spread)")
	fs.BoolVar(&cfg.KillReplica, "kill-replica", false, "with --replicas: after the events, kill -9 the last replica and measure until its proxies are synced again elsewhere")
	fs.BoolVar(&cfg.FileDriven, "file-driven", false, "run xdshard as `xdshard serve --config DIR` in its own process and change it by renaming rewritten tenant files into place (one idle tenant's, every tenant's, istio-system's), the baselines getting the same changes from memory")
	fs.StringVar(&cfg.ServeProfile, "file-driven-profile", "", "with --file-driven: write a CPU profile of the serve child during each event to this directory (filedriven-N.pprof)")
	capacity := bench.Capacity{}
	fs.Float64Var(&capacity.ChangeRate, "change-rate", 0.1, "with --replicas: mesh-wide changes per second the capacity model sizes for")
	fs.Float64Var(&capacity.Cores, "replica-cores", 2, "with --replicas: cores per replica in the capacity model")
	replicaMemory := fs.String("replica-memory", "4GiB", "with --replicas: memory per replica in the capacity model (bytes, or with KiB, MiB, GiB)")
	jsonOut := fs.String("json", "", "also write the results as JSON to this file")
	reportDir := fs.String("report", "", "also write an HTML report with latency CDF plots to this directory")
	return func() error {
		cfg.Seed = *seed
		switch *mode {
		case "sotw":
		case "delta":
			cfg.Delta = true
		case "mix":
			cfg.Mix = true
		default:
			return fmt.Errorf("--mode %q: want sotw, delta or mix", *mode)
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
		if cfg.Replicas == 1 || cfg.Replicas < 0 {
			return fmt.Errorf("--replicas %d: want 0 (one replica, no sharding) or at least 2", cfg.Replicas)
		}
		if cfg.Replicas >= 2 {
			if cfg.Target != "" || *inProcess {
				return fmt.Errorf("--replicas runs each replica in its own process: not with --target or --in-process")
			}
			if cfg.Misbehaving > 0 {
				return fmt.Errorf("--replicas does not run --misbehaving proxies")
			}
			mem, err := parseBytes(*replicaMemory)
			if err != nil || mem == 0 || capacity.Cores <= 0 || capacity.ChangeRate <= 0 {
				return fmt.Errorf("--replica-memory (e.g. 4GiB), --replica-cores and --change-rate must be positive")
			}
			capacity.MemoryBytes = mem
		} else if cfg.KillReplica {
			return fmt.Errorf("--kill-replica needs --replicas N (N >= 2)")
		}
		if cfg.FileDriven {
			if cfg.Target != "" || *inProcess || cfg.Replicas > 0 {
				return fmt.Errorf("--file-driven runs xdshard serve in its own process: not with --target, --in-process or --replicas")
			}
			if cfg.Rate > 0 {
				return fmt.Errorf("--file-driven does not run --rate")
			}
		}
		if cfg.Target != "" {
			if err := checkListenAddr("target", cfg.Target, false); err != nil {
				return fmt.Errorf("--target must be a loopback HOST:PORT: load goes to this machine only")
			}
			cfg.Baselines = nil
		}
		// The profile directories are made now, so a run does not end
		// with its profiles lost to a missing directory.
		for _, dir := range []string{cfg.CPUProfile, cfg.ServeProfile} {
			if dir == "" {
				continue
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("profile directory: %w", err)
			}
		}
		if !*inProcess && cfg.Target == "" {
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("finding this binary to run the servers apart: %w (or pass --in-process)", err)
			}
			cfg.Exe = exe
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
		var sharded *bench.ShardedResult
		if cfg.Replicas >= 2 {
			sharded, err = bench.RunReplicas(ctx, cfg, os.Stderr)
			if sharded != nil {
				if werr := bench.WriteReplicas(os.Stdout, cfg, &rs[0], sharded, capacity); werr != nil {
					return werr
				}
			}
			if err != nil {
				return err
			}
			if cfg.Symmetric {
				symmetric, err := bench.RunSymmetric(ctx, cfg, os.Stderr)
				if symmetric != nil {
					if werr := bench.WriteSymmetric(os.Stdout, sharded, symmetric); werr != nil {
						return werr
					}
				}
				if err != nil {
					return err
				}
			}
		}
		if *reportDir != "" {
			if err := bench.WriteHTML(*reportDir, cfg, rs); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "report: %s\n", filepath.Join(*reportDir, "index.html"))
		}
		if *jsonOut != "" {
			f, err := os.Create(*jsonOut)
			if err != nil {
				return err
			}
			defer f.Close()
			if sharded != nil {
				enc := json.NewEncoder(f)
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"config": cfg, "results": rs, "sharded": sharded})
			}
			return bench.WriteJSON(f, cfg, rs)
		}
		return nil
	}
}

// parseBytes reads a size: a number of bytes, or with a KiB, MiB or GiB
// suffix.
func parseBytes(s string) (uint64, error) {
	mult := uint64(1)
	for suffix, m := range map[string]uint64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if rest, ok := strings.CutSuffix(s, suffix); ok {
			s, mult = rest, m
			break
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("size %q: want bytes, or a number with KiB, MiB or GiB", s)
	}
	return uint64(v * float64(mult)), nil
}

// benchGenCmd writes the synthetic fleet as a manifest directory, so
// `xdshard serve --config DIR` serves the same fleet the bench measures.
func newBenchGenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "gen --out DIR [--tenants N --services N --endpoints N --seed N]",
		Short:   "Write the synthetic fleet as a manifest directory, for xdshard serve --config DIR",
		Example: "  xdshard bench gen --out /tmp/fleet && xdshard serve --config /tmp/fleet",
		Args:    noArgs("use --out DIR"),
	}
	fs := cmd.Flags()
	out := fs.String("out", "", "directory to write the fleet's manifests to (created)")
	spec := fleet.Spec{}
	fs.IntVar(&spec.Tenants, "tenants", 100, "tenants")
	fs.IntVar(&spec.Services, "services", 20, "services per tenant")
	fs.IntVar(&spec.Endpoints, "endpoints", 5, "endpoints per service")
	fs.Uint64Var(&spec.Seed, "seed", 1, "fleet seed")
	cmd.RunE = func(*cobra.Command, []string) error { return benchGen(*out, spec) }
	return cmd
}

func benchGen(out string, spec fleet.Spec) error {
	if out == "" {
		return fmt.Errorf("bench gen needs --out DIR")
	}
	if spec.Tenants <= 0 || spec.Tenants > 250 || spec.Services <= 0 || spec.Endpoints <= 0 {
		return fmt.Errorf("--tenants must be 1-250, --services and --endpoints positive")
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	objs := fleet.Generate(spec)
	byNS := model.ByNamespace(objs)
	for ns, objs := range byNS {
		f, err := os.Create(filepath.Join(out, ns+".yaml"))
		if err != nil {
			return err
		}
		err = manifest.Encode(f, objs)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "wrote %d objects in %d files to %s; serve them with: xdshard serve --config %s\n", len(objs), len(byNS), out, out)
	return nil
}

// benchServerCmd is the hidden child side of `xdshard bench`: one server
// under test, driven over standard input.
func newBenchServerCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "bench-server CONFIG SERVER",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			if len(args) != 2 {
				return fmt.Errorf("bench-server is started by xdshard bench, not by hand")
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			return bench.ServeChild(ctx, args[0], args[1], os.Stdin, os.Stdout)
		},
	}
}
