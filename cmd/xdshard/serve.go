package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"

	"github.com/xdshard/xdshard/server"
	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/builder"
	"github.com/xdshard/xdshard/snapshot/demo"
	"github.com/xdshard/xdshard/snapshot/manifest"
	"github.com/xdshard/xdshard/snapshot/model"
)

// serveConfig is everything `xdshard serve` is told.
type serveConfig struct {
	config    string
	xdsAddr   string
	adminAddr string
	insecure  bool
	debounce  time.Duration
	maxDelay  time.Duration
	history   int
	logLevel  string
}

func serveFlags(args []string) (*serveConfig, error) {
	c := &serveConfig{}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&c.config, "config", "", "directory of YAML manifests to serve and follow (default: the embedded demo mesh)")
	fs.StringVar(&c.xdsAddr, "xds-addr", "127.0.0.1:15010", "HOST:PORT of the gRPC ADS server")
	fs.StringVar(&c.adminAddr, "admin-addr", "127.0.0.1:15014", "HOST:PORT of the HTTP admin server (/healthz, /readyz, /metrics, /debug/pprof, /debug/syncz)")
	fs.BoolVar(&c.insecure, "insecure", false, "allow plaintext serving on non-loopback addresses")
	fs.DurationVar(&c.debounce, "debounce", 100*time.Millisecond, "quiet time after a tenant's last change before it is rebuilt")
	fs.DurationVar(&c.maxDelay, "max-delay", time.Second, "longest a tenant's change waits during a burst of changes")
	fs.IntVar(&c.history, "history", snapshot.DefaultHistory, "snapshot versions kept per tenant for rollback")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("serve takes no arguments, got %q; see xdshard serve -h", fs.Args())
	}
	if err := checkListenAddr("xds-addr", c.xdsAddr, c.insecure); err != nil {
		return nil, err
	}
	if err := checkListenAddr("admin-addr", c.adminAddr, c.insecure); err != nil {
		return nil, err
	}
	if c.config != "" {
		if st, err := os.Stat(c.config); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("--config %q is not a readable directory; pass a directory of YAML manifests, or omit --config for the demo mesh", c.config)
		}
	}
	if c.debounce <= 0 || c.maxDelay < c.debounce {
		return nil, fmt.Errorf("--debounce %s and --max-delay %s: want 0 < debounce <= max-delay", c.debounce, c.maxDelay)
	}
	return c, nil
}

func serveCmd(args []string) error {
	cfg, err := serveFlags(args)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg.logLevel)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := startServing(ctx, cfg, log)
	if err != nil {
		return err
	}
	r.printBanner(os.Stdout)
	return r.wait()
}

// running is a started xdshard: the pieces tests and serve share.
type running struct {
	cfg      *serveConfig
	mesh     *model.Mesh
	store    *snapshot.Store
	builder  *builder.Builder
	server   *server.Server
	xdsAddr  string
	admin    string
	synced   atomic.Bool
	syncedCh chan struct{} // closed after the first full sync is built
	errc     chan error
	shutdown func()
}

// startServing wires source -> mesh -> builder -> store -> server and
// starts listening. It returns once the listeners are open; readiness
// follows the source's first full sync.
func startServing(ctx context.Context, cfg *serveConfig, log *slog.Logger) (*running, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r := &running{cfg: cfg, mesh: model.NewMesh(), store: snapshot.NewStore(cfg.history), errc: make(chan error, 4), syncedCh: make(chan struct{})}
	r.server = server.New(r.store, server.Options{Resolver: r.mesh, Logger: log, Registry: reg})
	r.builder = builder.New(r.mesh, r.store, builder.Options{
		Debounce: cfg.debounce, MaxDelay: cfg.maxDelay, Build: buildTenant, Logger: log,
		Observe: r.server.Metrics().Stage,
	})
	xdsLis, err := net.Listen("tcp", cfg.xdsAddr)
	if err != nil {
		return nil, fmt.Errorf("--xds-addr %s: %w (is another xdshard running? pick a free port)", cfg.xdsAddr, err)
	}
	adminLis, err := net.Listen("tcp", cfg.adminAddr)
	if err != nil {
		xdsLis.Close()
		return nil, fmt.Errorf("--admin-addr %s: %w (pick a free port)", cfg.adminAddr, err)
	}
	r.xdsAddr, r.admin = xdsLis.Addr().String(), adminLis.Addr().String()
	g := grpc.NewServer(server.GRPCOptions()...)
	r.server.Register(g)
	httpSrv := &http.Server{Handler: r.server.AdminHandler(reg, r.ready), ReadHeaderTimeout: 10 * time.Second}

	runCtx, cancel := context.WithCancel(ctx)
	src := source(cfg.config, log)
	go func() { r.errc <- r.runSource(runCtx, src) }()
	go func() { _ = r.builder.Run(runCtx) }()
	// Serve xDS only once the config has been read, as istiod waits for
	// its caches: a proxy connecting earlier would be refused as a member
	// of no tenant. Until then its connection waits in the listen backlog.
	go func() {
		select {
		case <-r.syncedCh:
			r.errc <- g.Serve(xdsLis)
		case <-runCtx.Done():
			xdsLis.Close()
		}
	}()
	go func() {
		if err := httpSrv.Serve(adminLis); !errors.Is(err, http.ErrServerClosed) {
			r.errc <- err
		}
	}()
	r.shutdown = func() {
		cancel()
		r.server.Close()
		g.GracefulStop()
		_ = httpSrv.Close()
	}
	go func() { <-runCtx.Done(); r.shutdown() }()
	return r, nil
}

func source(dir string, log *slog.Logger) model.Source {
	if dir == "" {
		return manifest.StaticSource(demo.FS())
	}
	return manifest.NewSource(dir, log)
}

// runSource feeds the builder from a source; the first event is built at
// once so the first clients get config without waiting for a debounce.
func (r *running) runSource(ctx context.Context, src model.Source) error {
	return src.Run(ctx, func(ev model.Event) {
		for file, d := range ev.Diagnostics {
			r.builder.SetDiagnostics(file, d)
		}
		if !r.synced.Load() && ev.Synced {
			r.builder.Mesh().Apply(ev.Changes)
			if err := r.builder.BuildAll(); err != nil {
				r.errc <- err
			}
			r.synced.Store(true)
			close(r.syncedCh)
			return
		}
		r.builder.Apply(ev.Changes)
	})
}

func (r *running) ready() (bool, string) {
	if !r.synced.Load() {
		return false, "the config source has not been read yet"
	}
	return true, ""
}

func (r *running) wait() error {
	err := <-r.errc
	r.shutdown()
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

func (r *running) printBanner(w io.Writer) {
	src := "the embedded demo mesh"
	if r.cfg.config != "" {
		src = r.cfg.config + " (following edits)"
	}
	// The banner lists tenants, so it waits for the first build.
	select {
	case <-r.syncedCh:
	case <-time.After(30 * time.Second):
	}
	fmt.Fprintf(w, "xdshard %s serving %s\n", version, src)
	fmt.Fprintf(w, "  xDS (ADS, SotW and delta): %s\n  admin: http://%s/ (healthz, readyz, metrics, debug/pprof, debug/syncz, debug/tenantz)\n", r.xdsAddr, r.admin)
	fmt.Fprintf(w, "  tenants: %s\n", strings.Join(r.store.Tenants(), ", "))
	fmt.Fprintf(w, "Try a proxyless gRPC client of tenant initech:\n  GRPC_XDS_BOOTSTRAP_CONFIG='{\"xds_servers\":[{\"server_uri\":\"%s\",\"channel_creds\":[{\"type\":\"insecure\"}],\"server_features\":[\"xds_v3\"]}],\"node\":{\"id\":\"sidecar~127.0.0.1~client.initech~initech.svc.cluster.local\",\"metadata\":{\"GENERATOR\":\"grpc\"}}}' your-client xds:///legacy.initech.svc.cluster.local:7070\n", r.xdsAddr)
}
