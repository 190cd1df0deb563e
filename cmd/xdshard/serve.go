package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/xdshard/xdshard/identity"
	"github.com/xdshard/xdshard/identity/tokenreview"
	"github.com/xdshard/xdshard/internal/cache"
	"github.com/xdshard/xdshard/opstate"
	"github.com/xdshard/xdshard/server"
	"github.com/xdshard/xdshard/server/xds"
	"github.com/xdshard/xdshard/sharding"
	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/source/demo"
	"github.com/xdshard/xdshard/snapshot/source/kube"
	"github.com/xdshard/xdshard/snapshot/source/manifest"
	"github.com/xdshard/xdshard/snapshot/translate"
)

// serveConfig is everything `xdshard serve` is told.
type serveConfig struct {
	tokenReview tokenreview.Options // --token-review-*, --token-cache-ttl
	config      string
	xdsAddr     string
	mcpAddr     string
	adminAddr   string
	insecure    bool
	debounce    time.Duration
	maxDelay    time.Duration
	history     int
	logLevel    string
	logFormat   string

	pushConcurrency int
	pushUntilAck    bool
	sendTimeout     time.Duration
	clientNames     int
	fullSotW        bool
	maxFileBytes    int64
	kubeconfig      string
	kubeContext     string
	inCluster       bool // run in a Pod with neither --config nor --kubeconfig
	applyNetpols    bool
	discoverySel    []*metav1.LabelSelector // --discovery-selectors: which namespaces are the mesh
	replicaID       string
	peerAddr        string
	peers           []sharding.Member
	leaseNamespace  string
	stateDir        string // --state-dir: where the file source keeps decisions ("-": nowhere)
	stateNamespace  string // --state-namespace: where Kubernetes keeps them ("": nowhere)
	leaseDuration   time.Duration
	leaseRenew      time.Duration
	rebalance       time.Duration
	affinity        bool // --stream-affinity
	fetchCache      int64
	tls             identity.Files
	trustDomain     string
	audiences       []string
	tokens          bool
	peerIDs         identity.AllowList
	adminReaders    identity.AllowList
	adminPprof      bool
	maxConns        int
	adminWriters    identity.AllowList
	drain           time.Duration
	maxConnAge      time.Duration
	rollout         xds.Rollout
	mcpServices     bool
}

// serveFlags parses serve's command line (for tests; the command itself
// parses through cobra).
func serveFlags(args []string) (*serveConfig, error) {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	finish := bindServeFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return finish(fs.Args())
}

// bindServeFlags defines serve's flags on fs; finish checks them once
// parsed, with the arguments left.
func bindServeFlags(fs *pflag.FlagSet) (finish func(args []string) (*serveConfig, error)) {
	c := &serveConfig{}
	fs.StringVar(&c.config, "config", "", "directory of YAML manifests to serve and follow (default: the embedded demo mesh, or Kubernetes when run in a Pod)")
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "read the mesh from the Kubernetes API server of this kubeconfig file instead of files")
	fs.StringVar(&c.kubeContext, "context", "", "the kubeconfig context to use (default: its current context)")
	fs.StringVar(&c.replicaID, "replica-id", "", "this replica's identity among --peers (default: the host name)")
	fs.StringVar(&c.peerAddr, "peer-addr", "127.0.0.1:15012", "HOST:PORT this replica serves its tenants' snapshots to its peers on (with --peers)")
	fs.StringVar(&c.leaseNamespace, "lease-namespace", "", "with Kubernetes as the source: shard tenants over the replicas found by their Leases in this namespace (each replica keeps one, xdshard-<replica-id>)")
	fs.StringVar(&c.stateDir, "state-dir", "", "with --config: the directory where rollbacks' pins and the candidates rollouts took back are kept, so a restart honours them (default: beside the config, .NAME.xdshard-state; - keeps them in memory only)")
	fs.StringVar(&c.stateNamespace, "state-namespace", "", "with Kubernetes as the source: keep rollbacks' pins and the candidates rollouts took back as ConfigMaps (labelled xdshard.io/decision) in this namespace, so a restart of every replica honours them (default: --lease-namespace; without either, in memory only)")
	fs.DurationVar(&c.leaseDuration, "lease-duration", 15*time.Second, "with --lease-namespace: a replica whose Lease is not renewed for this long is dropped and its tenants move (whole seconds)")
	fs.DurationVar(&c.leaseRenew, "lease-renew", 5*time.Second, "with --lease-namespace: how often this replica renews its Lease (and reports its streams in it)")
	fs.BoolVar(&c.affinity, "stream-affinity", false, "with --lease-namespace: also move the proxy streams of tenants another replica owns, at the balancing rate, off a replica holding at least the mean, so each settles on its tenant's owner (nothing fetched for it: less CPU and memory per replica); the share rule still bounds every replica")
	fs.DurationVar(&c.rebalance, "rebalance-every", time.Second, "with --lease-namespace: how often (jittered) a replica above its share of proxy streams, ceil(streams/replicas x 1.1), ends a few so their clients redial; 0 never")
	fs.Int64Var(&c.fetchCache, "fetch-cache-bytes", cache.DefaultBytes, "sharded: bytes of fetched snapshots kept for a while after their last local client left (a reconnect then fetches nothing); past it the least recently left go")
	fs.StringVar(&c.tls.Cert, "tls-cert", "", "serve the xDS, peer and admin ports over TLS with this certificate (PEM; its SPIFFE URI is this replica's identity); reloaded when the file changes")
	fs.StringVar(&c.tls.Key, "tls-key", "", "the key of --tls-cert (PEM)")
	fs.StringVar(&c.tls.ClientCA, "client-ca", "", "with --tls-cert: the CA bundle clients' and peers' certificates must chain to (the mesh's root, e.g. istio-ca-root-cert's root-cert.pem)")
	fs.StringVar(&c.trustDomain, "trust-domain", "cluster.local", "the trust domain of identities proven by service-account tokens")
	audiences := fs.String("token-audiences", "istio-ca", "with TLS and Kubernetes: accept service-account tokens (authorization: Bearer) for these audiences, verified by TokenReview, as istiod accepts istio-agent's; comma-separated, empty to accept certificates only")
	fs.Float32Var(&c.tokenReview.QPS, "token-review-qps", tokenreview.DefaultQPS, "with tokens: TokenReviews a second xdshard may send the API server (a client of their own), in bursts of --token-review-burst: the proxies of a failed replica, each with its own token, are reviewed at once; negative for no client-side limit")
	fs.IntVar(&c.tokenReview.Burst, "token-review-burst", tokenreview.DefaultBurst, "with tokens: the burst of --token-review-qps")
	fs.DurationVar(&c.tokenReview.SuccessTTL, "token-cache-ttl", tokenreview.DefaultSuccessTTL, "with tokens: a verified token is taken again without a TokenReview for this long at most (its own expiry bounds it too), so one revoked (its pod or service account deleted) may be taken this late; a refused token is refused again for 10 s; negative: verified tokens are not kept")
	fs.Float64Var(&c.tokenReview.SourceRate, "token-review-per-source", tokenreview.DefaultSourceRate, "with tokens: TokenReviews a second one client host may cause (a token seen recently costs none), in bursts of --token-review-per-source-burst; past it its new tokens are refused (token_review_throttled) so one host's junk tokens cannot starve the others' reviews. Raise it where many proxies reach xdshard from one address (a NAT, a gateway); negative for no bound")
	fs.IntVar(&c.tokenReview.SourceBurst, "token-review-per-source-burst", tokenreview.DefaultSourceBurst, "with tokens: the burst of --token-review-per-source")
	peerIDs := fs.String("peer-identities", "", "with TLS: who may fetch snapshots on the peer port (default: this replica's own certificate identity)")
	adminWriters := fs.String("admin-writers", "", "with TLS: who may roll back and unpin tenants beyond loopback (default nobody; loopback callers always may)")
	adminReaders := fs.String("admin-readers", "istio-system/*", "with TLS: who may read the admin port's debug and status pages beyond loopback (/healthz, /readyz and /metrics are open)")
	mcpServices := fs.String("mcp-services", "auto", "also serve istiod each tenant's Kubernetes Services as generated ServiceEntries with their endpoints, for an istiod whose only config source is xdshard: on, off, or auto (on when reading files or the demo, off with Kubernetes, where istiod reads k8s:// itself)")
	rollout := fs.String("rollout", "", "canary rollout of config for every tenant: canary (a tenant's new version goes to its canaries first, is promoted once they all accepted it and --rollout-bake passed, and is taken back at once if one rejects it) or off; default canary when --rollout-percent or --rollout-selector is set. A tenant's Namespace annotation xdshard.io/rollout (canary or off) overrides it")
	fs.IntVar(&c.rollout.Percent, "rollout-percent", 0, "with rollout: this percent of each tenant's proxies are its canaries, by node ID hash (default 10 with --rollout canary)")
	fs.StringVar(&c.rollout.Selector, "rollout-selector", "", "with rollout: the canaries are the proxies whose labels (node metadata LABELS) match this Kubernetes label selector, such as track=canary, instead of a percent")
	fs.DurationVar(&c.rollout.AckTimeout, "rollout-ack-timeout", xds.DefaultAckTimeout, "with rollout: a canary that has not acknowledged a new version this long after its bake counts as rejecting it (one that never ACKs cannot hold a rollout)")
	fs.Float64Var(&c.rollout.MaxNACKRatio, "rollout-max-nack-ratio", 0, "with rollout: the share of a tenant's canaries (0 to 1) that may reject a new version without taking it back; 0 takes it back on the first rejection")
	fs.DurationVar(&c.rollout.Bake, "rollout-bake", 30*time.Second, "with rollout: how long a new version is served to the canaries at least before it is promoted")
	fs.DurationVar(&c.drain, "drain-period", 10*time.Second, "on SIGTERM: readiness fails, no new stream is taken, and streams end at random moments within this period so proxies move to other replicas gradually; 0 ends them at once (keep it under the pod's termination grace period)")
	fs.DurationVar(&c.maxConnAge, "max-connection-age", 30*time.Minute, "send GOAWAY to a connection after about this long (with jitter) so long-lived streams rebalance over the replicas, as istiod's keepaliveMaxServerConnectionAge; 0 never")
	fs.IntVar(&c.maxConns, "max-connections", server.DefaultMaxConnections, "xDS connections established at once (counted once their TLS handshake completed); one more fails its handshake and is counted (xdshard_refused_connections_total{reason=\"too_many\"})")
	fs.BoolVar(&c.adminPprof, "admin-pprof", false, "serve /debug/pprof on an admin address beyond loopback too (always served on loopback)")
	peers := fs.String("peers", "", "shard tenants over these replicas, this one included: ID=HOST:PORT,... (their --peer-addr); each builds only the tenants it owns and fetches the others' from their owners")
	fs.BoolVar(&c.applyNetpols, "apply-network-policies", false, "with Kubernetes as the source: apply each tenant's generated NetworkPolicies (server-side apply, field manager xdshard) and delete them when the tenant opts out or goes away")
	discoverySel := fs.StringArray("discovery-selectors", nil, "with Kubernetes as the source: the namespaces that are the mesh, as istiod's meshConfig.discoverySelectors: a YAML or JSON list of label selectors (matchLabels, matchExpressions), ORed, such as '[{matchLabels: {istio-discovery: enabled}}]'; repeat to add more. Objects elsewhere are not read: no tenant, no generated NetworkPolicy. Followed live as namespaces are relabelled. Default: every namespace but kube-system, kube-public, kube-node-lease and local-path-storage, which only a selector asking for them (matchLabels, In, Exists) brings in; istio-system is always read")
	fs.StringVar(&c.xdsAddr, "xds-addr", "127.0.0.1:15010", "HOST:PORT of the gRPC ADS server")
	fs.StringVar(&c.mcpAddr, "mcp-addr", "127.0.0.1:15011", "HOST:PORT serving istiod's config-source (MCP) streams, and only those (\"\" for none): point istiod's meshConfig.configSources at xds://HOST:PORT. istiod presents no client identity to a config source, so this port asks for none: with TLS it serves the replica's certificate (istiod's tlsSettings mode SIMPLE) and admits any client; beyond loopback, let only istiod reach it (the Helm chart's NetworkPolicy)")
	fs.StringVar(&c.adminAddr, "admin-addr", "127.0.0.1:15014", "HOST:PORT of the HTTP admin server (/healthz, /readyz, /metrics, /debug/pprof, /debug/syncz)")
	fs.BoolVar(&c.insecure, "insecure", false, "allow plaintext serving on non-loopback addresses")
	fs.DurationVar(&c.debounce, "debounce", 100*time.Millisecond, "quiet time after a tenant's last change before it is rebuilt")
	fs.DurationVar(&c.maxDelay, "max-delay", time.Second, "longest a tenant's change waits during a burst of changes")
	fs.IntVar(&c.history, "history", snapshot.DefaultHistory, "snapshot versions kept per tenant for rollback")
	fs.IntVar(&c.pushConcurrency, "push-concurrency", xds.DefaultPushConcurrency, "streams that may encode and send at once; a change that wakes every proxy is pushed this many at a time (istiod's PILOT_PUSH_THROTTLE). A stream whose sends take longer than 20 ms gives its slot back: a client that does not read holds up the others that long at most")
	fs.BoolVar(&c.pushUntilAck, "push-slot-until-ack", false, "hold a stream's push slot until its client ACKs (or NACKs) what it was sent, 20 ms at most: a change to one tenant made during a mesh-wide push then reaches its proxies before the rest of that push (SotW p99 10-30 ms against 110-160 ms at 10,000 proxies), and the mesh-wide push takes about twice as long and twice the CPU (docs/serving.md)")
	fs.IntVar(&c.clientNames, "client-subscription-bytes", xds.DefaultIdentitySubscriptionBytes, "bytes of resource names the subscriptions of one client may hold, over all its streams and connections (its identity, or its host where claims are trusted); past it a subscription is refused (identity_budget). Raise it where many proxies share a service account, or a host in plaintext")
	fs.DurationVar(&c.sendTimeout, "send-timeout", xds.DefaultSendTimeout, "close the connection of a client that has not taken a response within this long (it does not read: gRPC flow control holds the send); counted as xdshard_refused_requests_total{reason=\"send_timeout\"}, and the client reconnects")
	fs.BoolVar(&c.fullSotW, "full-sotw", false, "send every subscribed resource in each state-of-the-world EDS and RDS response, as go-control-plane does, for clients that take one as the whole state; by default a proxy that ACKed the type's last response gets only the resources that changed since, as istiod sends endpoints")
	fs.Int64Var(&c.maxFileBytes, "max-file-bytes", 8<<20, "largest manifest file read; a larger one is reported and keeps its last good objects")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	return func(args []string) (*serveConfig, error) {
		if err := c.rolloutMode(*rollout); err != nil {
			return nil, err
		}
		if err := c.discoverySelectors(*discoverySel); err != nil {
			return nil, err
		}
		return c.check(args, *peers, *peerIDs, *adminReaders, *adminWriters, *audiences, *mcpServices)
	}
}

// rolloutMode checks the rollout flags and turns --rollout canary into a
// percent when none is given.
func (c *serveConfig) rolloutMode(mode string) error {
	r := &c.rollout
	if r.AckTimeout <= 0 {
		return fmt.Errorf("--rollout-ack-timeout %s: want more than 0", r.AckTimeout)
	}
	if r.Percent < 0 || r.Percent > 100 || r.Bake < 0 {
		return fmt.Errorf("--rollout-percent %d and --rollout-bake %s: want a percent from 0 to 100 and a bake of 0 or more", r.Percent, r.Bake)
	}
	if r.MaxNACKRatio < 0 || r.MaxNACKRatio >= 1 {
		return fmt.Errorf("--rollout-max-nack-ratio %g: want at least 0 (take a version back on its first rejection) and less than 1", r.MaxNACKRatio)
	}
	if r.Selector != "" {
		if _, err := labels.Parse(r.Selector); err != nil {
			return fmt.Errorf("--rollout-selector %q: %v; want a Kubernetes label selector such as track=canary", r.Selector, err)
		}
		if r.Percent != 0 {
			return fmt.Errorf("--rollout-selector and --rollout-percent both given: the canaries are picked by labels or by a percent, pick one")
		}
	}
	switch mode {
	case "canary":
		if !r.On() {
			r.Percent = xds.DefaultCanaryPercent
		}
	case "off":
		if r.On() {
			return fmt.Errorf("--rollout off with --rollout-percent or --rollout-selector: drop those, or pass --rollout canary")
		}
	case "":
	default:
		return fmt.Errorf("--rollout %q: want canary or off", mode)
	}
	return nil
}

// discoverySelectors parses --discovery-selectors, which picks among the
// namespaces read from Kubernetes.
func (c *serveConfig) discoverySelectors(values []string) error {
	sels, err := kube.ParseDiscoverySelectors(values)
	if err != nil {
		return err
	}
	kubernetes := c.kubeconfig != "" || (c.config == "" && os.Getenv("KUBERNETES_SERVICE_HOST") != "")
	if len(sels) > 0 && !kubernetes {
		return fmt.Errorf("--discovery-selectors picks namespaces read from Kubernetes; files and the demo are read whole: drop it, or pass --kubeconfig")
	}
	c.discoverySel = sels
	return nil
}

// check completes c from the flags that need parsing and refuses
// combinations serve cannot run with.
func (c *serveConfig) check(args []string, peers, peerIDs, adminReaders, adminWriters, audiences, mcpServices string) (*serveConfig, error) {
	if len(args) > 0 {
		return nil, fmt.Errorf("serve takes no arguments, got %q; see xdshard serve --help", args)
	}
	tlsOn := c.tls != identity.Files{}
	if tlsOn && (c.tls.Cert == "" || c.tls.Key == "" || c.tls.ClientCA == "") {
		return nil, fmt.Errorf("TLS needs all of --tls-cert, --tls-key and --client-ca")
	}
	if tlsOn && c.insecure {
		return nil, fmt.Errorf("--insecure and TLS both given: --insecure allows plaintext beyond loopback; with TLS it is not needed")
	}
	var err error
	for _, l := range []struct {
		flag, val string
		dst       *identity.AllowList
	}{{"peer-identities", peerIDs, &c.peerIDs}, {"admin-readers", adminReaders, &c.adminReaders}, {"admin-writers", adminWriters, &c.adminWriters}} {
		if *l.dst, err = identity.ParseAllowList(l.val); err != nil {
			return nil, fmt.Errorf("--%s: %w", l.flag, err)
		}
	}
	for _, a := range strings.Split(audiences, ",") {
		if a = strings.TrimSpace(a); a != "" {
			c.audiences = append(c.audiences, a)
		}
	}
	plain := c.insecure || tlsOn // checkListenAddr: beyond loopback allowed
	// In a Pod with neither --config nor --kubeconfig, serve reads the API
	// server with its service account; known before the checks below.
	c.inCluster = c.config == "" && c.kubeconfig == "" && os.Getenv("KUBERNETES_SERVICE_HOST") != ""
	if c.leaseNamespace != "" && peers != "" {
		return nil, fmt.Errorf("--lease-namespace and --peers both given: members come from Leases or from the list, pick one")
	}
	if c.affinity && c.leaseNamespace == "" {
		return nil, fmt.Errorf("--stream-affinity without --lease-namespace: streams are moved by the balancing, which reads the stream counts in the Leases")
	}
	if c.stateDir != "" && c.config == "" {
		return nil, fmt.Errorf("--state-dir %q without --config: it is where the file source keeps decisions; with Kubernetes they are ConfigMaps (--state-namespace)", c.stateDir)
	}
	if c.stateNamespace != "" && c.kubeconfig == "" && !c.inCluster {
		return nil, fmt.Errorf("--state-namespace %q needs Kubernetes: --kubeconfig, or running in a Pod", c.stateNamespace)
	}
	if c.stateNamespace == "" {
		c.stateNamespace = c.leaseNamespace
	}
	if c.leaseNamespace != "" {
		if c.kubeconfig == "" && !c.inCluster {
			return nil, fmt.Errorf("--lease-namespace needs Kubernetes: --kubeconfig, or running in a Pod")
		}
		if c.replicaID == "" {
			c.replicaID, _ = os.Hostname()
		}
		if err := checkListenAddr("peer-addr", c.peerAddr, plain); err != nil {
			return nil, err
		}
	}
	if peers != "" {
		ms, err := sharding.ParsePeers(peers)
		if err != nil {
			return nil, err
		}
		c.peers = ms
		if c.replicaID == "" {
			c.replicaID, _ = os.Hostname()
		}
		if err := checkListenAddr("peer-addr", c.peerAddr, plain); err != nil {
			return nil, err
		}
	}
	if err := checkListenAddr("xds-addr", c.xdsAddr, plain); err != nil {
		return nil, err
	}
	if err := checkListenAddr("admin-addr", c.adminAddr, plain); err != nil {
		return nil, err
	}
	if c.mcpAddr != "" {
		if err := checkListenAddr("mcp-addr", c.mcpAddr, plain); err != nil {
			return nil, err
		}
	}
	if c.config != "" && c.kubeconfig != "" {
		return nil, fmt.Errorf("--config and --kubeconfig both given; xdshard reads one source: pick one")
	}
	if c.kubeContext != "" && c.kubeconfig == "" {
		return nil, fmt.Errorf("--context %q needs --kubeconfig", c.kubeContext)
	}
	c.tokens = tlsOn && len(c.audiences) > 0 && (c.kubeconfig != "" || c.inCluster)
	switch mcpServices {
	case "on":
		c.mcpServices = true
	case "off":
	case "auto":
		c.mcpServices = c.kubeconfig == "" && !c.inCluster
	default:
		return nil, fmt.Errorf("--mcp-services %q: want on, off or auto", mcpServices)
	}
	if c.applyNetpols && c.kubeconfig == "" && !c.inCluster {
		return nil, fmt.Errorf("--apply-network-policies writes to Kubernetes: it needs --kubeconfig (or running in a Pod)")
	}
	if c.config != "" {
		if st, err := os.Stat(c.config); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("--config %q is not a readable directory; pass a directory of YAML manifests, or omit --config for the demo mesh", c.config)
		}
	}
	if c.drain < 0 || c.maxConnAge < 0 {
		return nil, fmt.Errorf("--drain-period %s and --max-connection-age %s: want 0 or more", c.drain, c.maxConnAge)
	}
	if c.maxConns < 1 {
		return nil, fmt.Errorf("--max-connections %d: want at least 1", c.maxConns)
	}
	if c.fetchCache < 1 {
		return nil, fmt.Errorf("--fetch-cache-bytes %d: want at least 1", c.fetchCache)
	}
	if c.maxFileBytes < 1 {
		return nil, fmt.Errorf("--max-file-bytes %d: want at least 1", c.maxFileBytes)
	}
	if c.clientNames < 1<<20 {
		return nil, fmt.Errorf("--client-subscription-bytes %d: want at least 1 MiB (1048576)", c.clientNames)
	}
	if c.sendTimeout <= 0 {
		return nil, fmt.Errorf("--send-timeout %s: want more than 0", c.sendTimeout)
	}
	if c.pushConcurrency < 1 {
		return nil, fmt.Errorf("--push-concurrency %d: want at least 1", c.pushConcurrency)
	}
	if c.history < 1 {
		return nil, fmt.Errorf("--history %d: want at least 1 (the version being served)", c.history)
	}
	if c.debounce <= 0 || c.maxDelay < c.debounce {
		return nil, fmt.Errorf("--debounce %s and --max-delay %s: want 0 < debounce <= max-delay", c.debounce, c.maxDelay)
	}
	return c, nil
}

func newServeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve tenant snapshots over ADS (default: the embedded demo mesh)",
		Long: `Reads a mesh (--config DIR, --kubeconfig FILE, the service account in a Pod, or the embedded
demo), builds one snapshot per tenant, and serves it over gRPC ADS (SotW and delta) to istiod
(MCP), Envoy sidecars, proxyless gRPC clients and istio-agent (NDS), with an admin address for
health, metrics, the debug pages and the admin gRPC API. Follows every change; SIGTERM drains.`,
		Example: `  # The embedded demo mesh, on loopback
  xdshard serve

  # A directory of manifests, followed as it is edited
  xdshard serve --config ./mesh

  # A cluster, sharded over the replicas found by their Leases
  xdshard serve --kubeconfig ~/.kube/config --lease-namespace istio-system`,
		Args: cobra.ArbitraryArgs, // refused by check, with a hint
	}
	finish := bindServeFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cfg, err := finish(args)
		if err != nil {
			return err
		}
		return serve(cmd.OutOrStdout(), cfg)
	}
	return cmd
}

func serve(out io.Writer, cfg *serveConfig) error {
	log, err := newLogger(cfg.logLevel, cfg.logFormat)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := startServing(ctx, cfg, log)
	if err != nil {
		return err
	}
	printBanner(out, cfg, r)
	return r.Wait(ctx)
}

// startServing starts the one replica assembly with serve's flags.
func startServing(ctx context.Context, cfg *serveConfig, log *slog.Logger) (*server.Replica, error) {
	src, err := source(cfg, log)
	if err != nil {
		return nil, err
	}
	var members sharding.Membership
	if cfg.leaseNamespace != "" {
		if members, err = leaseMembership(ctx, cfg, log); err != nil {
			return nil, err
		}
	}
	balance := cfg.rebalance
	if balance <= 0 {
		balance = -1
	}
	sc := server.Config{
		Membership: members, Balance: balance, BalanceSettle: 2 * cfg.leaseRenew, FetchCacheBytes: cfg.fetchCache, StreamAffinity: cfg.affinity,
		Source: src, XDSAddr: cfg.xdsAddr, MCPAddr: cfg.mcpAddr, AdminAddr: cfg.adminAddr,
		Debounce: cfg.debounce, MaxDelay: cfg.maxDelay, History: cfg.history, PushConcurrency: cfg.pushConcurrency, PushSlotUntilAnswered: cfg.pushUntilAck, SendTimeout: cfg.sendTimeout, Limits: xds.Limits{IdentitySubscriptionBytes: cfg.clientNames}, FullSotW: cfg.fullSotW,
		Logger: log, ReplicaID: cfg.replicaID, PeerAddr: cfg.peerAddr, Peers: cfg.peers,
		PeerIdentities: cfg.peerIDs, AdminReaders: cfg.adminReaders, AdminWriters: cfg.adminWriters, AdminPprof: cfg.adminPprof, MaxConnections: cfg.maxConns,
		Drain: cfg.drain, MaxConnectionAge: cfg.maxConnAge, Rollout: cfg.rollout,
	}
	if sc.State, err = stateKeeper(cfg); err != nil {
		return nil, err
	}
	sc.Registry = server.NewRegistry() // the translation caches report there too
	inc := translate.NewIncremental(translate.Options{MCPServices: cfg.mcpServices, Registry: sc.Registry})
	sc.Build, sc.BuildEndpoints, sc.Forget = inc.Build, inc.BuildEndpoints, inc.Forget
	if cfg.tls != (identity.Files{}) {
		if sc.TLS, err = identity.LoadCerts(cfg.tls, log); err != nil {
			return nil, err
		}
		log.Info("serving TLS; clients are who their certificates or tokens say", "identity", sc.TLS.Self().SPIFFE(), "tokens", cfg.tokens)
	} else if cfg.insecure {
		log.Warn("--insecure: serving plaintext beyond loopback; any client can claim any tenant's identity. Serve TLS (--tls-cert, --tls-key, --client-ca) on an untrusted network")
	}
	if cfg.tokens {
		rc, err := kube.RESTConfig(kube.Config{Kubeconfig: cfg.kubeconfig, Context: cfg.kubeContext})
		if err != nil {
			return nil, err
		}
		opts := cfg.tokenReview
		opts.Audiences, opts.TrustDomain = cfg.audiences, cfg.trustDomain
		if sc.Tokens, err = tokenreview.NewWithOptions(rc, opts); err != nil {
			return nil, err
		}
	}
	// The replica outlives ctx (the signal): Wait drains it when ctx ends,
	// while the Lease (above) is released at once so its tenants move.
	return server.Start(context.WithoutCancel(ctx), sc)
}

// stateKeeper is where decisions about tenants are kept: files beside
// the manifests, ConfigMaps in the cluster, or nowhere (the demo).
// The Kubernetes source records problems as Events and applies the
// generated NetworkPolicies through the replica's optional interfaces,
// which it finds by a type assertion: checked here, so a drifted method
// fails the build instead of silently doing nothing.
var (
	_ server.ProblemRecorder = (*kube.Source)(nil)
	_ server.SnapshotSink    = (*kube.Source)(nil)
)

func stateKeeper(cfg *serveConfig) (opstate.Keeper, error) {
	switch {
	case (cfg.kubeconfig != "" || cfg.inCluster) && cfg.stateNamespace != "":
		rc, err := kube.RESTConfig(kube.Config{Kubeconfig: cfg.kubeconfig, Context: cfg.kubeContext})
		if err != nil {
			return nil, err
		}
		return opstate.NewConfigMaps(rc, cfg.stateNamespace)
	case cfg.config != "" && cfg.stateDir == "-":
		return nil, nil
	case cfg.config != "" && cfg.stateDir != "":
		return opstate.Dir(cfg.stateDir), nil
	case cfg.config != "":
		return opstate.DirBeside(cfg.config), nil
	}
	return nil, nil
}

// source is the one source serve's flags name: files, Kubernetes (from a
// kubeconfig, or in a Pod its service account), or the embedded demo.
func source(cfg *serveConfig, log *slog.Logger) (model.Source, error) {
	switch {
	case cfg.kubeconfig != "" || cfg.inCluster:
		return kube.New(kube.Config{Kubeconfig: cfg.kubeconfig, Context: cfg.kubeContext, Logger: log, ApplyNetworkPolicies: cfg.applyNetpols, DiscoverySelectors: cfg.discoverySel})
	case cfg.config != "":
		s := manifest.NewSource(cfg.config, log)
		s.Limits.FileBytes = cfg.maxFileBytes
		return s, nil
	}
	return manifest.StaticSource(demo.FS()), nil
}

func printBanner(w io.Writer, cfg *serveConfig, r *server.Replica) {
	src := "the embedded demo mesh"
	switch {
	case cfg.config != "":
		src = cfg.config + " (following edits)"
	case cfg.kubeconfig != "":
		src = "Kubernetes (" + cfg.kubeconfig + ")"
	case cfg.inCluster:
		src = "Kubernetes (in-cluster)"
	}
	// The banner lists tenants, so it waits for the first build.
	select {
	case <-r.Synced():
	case <-time.After(30 * time.Second):
	}
	fmt.Fprintf(w, "xdshard %s serving %s\n", version, src)
	scheme := "http"
	if cfg.tls != (identity.Files{}) {
		scheme = "https"
	}
	if r.MCPAddr() != "" {
		fmt.Fprintf(w, "  MCP for istiod: %s (meshConfig.configSources: [{address: xds://%s}])\n", r.MCPAddr(), r.MCPAddr())
	}
	fmt.Fprintf(w, "  xDS (ADS, SotW and delta): %s\n  admin: %s://%s/ (the operator page; healthz, readyz, statusz, metrics, debug/pprof, debug/syncz, debug/tenantz)\n", r.XDSAddr(), scheme, r.AdminAddr())
	if scheme == "https" {
		fmt.Fprintf(w, "  TLS: clients present a certificate of the client CA with a SPIFFE identity, or a service-account token\n")
		return
	}
	fmt.Fprintf(w, "  tenants: %s\n", strings.Join(r.Tenants(), ", "))
	tenant, ns, target := exampleClient(r)
	if tenant == "" {
		return
	}
	fmt.Fprintf(w, "Try a proxyless gRPC client of tenant %s:\n  GRPC_XDS_BOOTSTRAP_CONFIG='{\"xds_servers\":[{\"server_uri\":\"%s\",\"channel_creds\":[{\"type\":\"insecure\"}],\"server_features\":[\"xds_v3\"]}],\"node\":{\"id\":\"sidecar~127.0.0.1~client.%s~%s.svc.cluster.local\",\"metadata\":{\"GENERATOR\":\"grpc\"}}}' your-client xds:///%s\n",
		tenant, r.XDSAddr(), ns, ns, target)
}

// leaseMembership takes part in membership over Leases and returns once
// this replica's Lease is held and the others' are read.
func leaseMembership(ctx context.Context, cfg *serveConfig, log *slog.Logger) (sharding.Membership, error) {
	rc, err := kube.RESTConfig(kube.Config{Kubeconfig: cfg.kubeconfig, Context: cfg.kubeContext})
	if err != nil {
		return nil, err
	}
	leases, err := sharding.NewLeases(sharding.LeaseConfig{REST: rc, Namespace: cfg.leaseNamespace,
		Self: sharding.Member{ID: cfg.replicaID, Addr: cfg.peerAddr}, Logger: log, Duration: cfg.leaseDuration, Renew: cfg.leaseRenew})
	if err != nil {
		return nil, err
	}
	ready := make(chan error, 1)
	go leases.Run(ctx, ready)
	if err := <-ready; err != nil {
		return nil, fmt.Errorf("taking part in membership over Leases in %s: %w", cfg.leaseNamespace, err)
	}
	return leases, nil
}

// exampleClient picks, from the mesh served, a tenant, one of its
// namespaces and a gRPC listener name its proxyless clients can dial (the
// banner's example), preferring the demo's initech; "" when none.
func exampleClient(r *server.Replica) (tenant, ns, target string) {
	tenants := r.Tenants()
	if i := slices.Index(tenants, "initech"); i > 0 {
		tenants[0], tenants[i] = tenants[i], tenants[0]
	}
	for _, t := range tenants {
		snap := r.Store().Current(t)
		if t == "istio-system" || snap == nil || len(snap.Namespaces) == 0 {
			continue
		}
		lds := snap.Set(snapshot.ViewGRPC, snapshot.ListenerType)
		if lds == nil || len(lds.Items) == 0 {
			continue
		}
		for _, it := range lds.Items {
			if strings.Contains(it.Name, "."+snap.Namespaces[0]+".") {
				return t, snap.Namespaces[0], it.Name
			}
		}
		return t, snap.Namespaces[0], lds.Items[0].Name
	}
	return "", "", ""
}
