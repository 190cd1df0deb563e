package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/xdshard/xdshard/identity"
	adminv1 "github.com/xdshard/xdshard/proto/xdshard/admin/v1"
)

// adminConn is how an operations command reaches a replica: its admin
// address (serve's --admin-addr), plaintext on loopback or TLS with a
// client certificate of the mesh's CA.
type adminConn struct {
	addr     string
	cert     string
	key      string
	ca       string
	identity string
	timeout  time.Duration
	output   string // -o, where the command prints a table
}

// bind adds the connection flags to cmd; outputs, when given, adds -o.
func (a *adminConn) bind(cmd *cobra.Command, outputs ...string) {
	fs := cmd.Flags()
	fs.StringVar(&a.addr, "admin-addr", "127.0.0.1:15014", "HOST:PORT of the replica's admin address (serve's --admin-addr)")
	fs.StringVar(&a.cert, "tls-cert", "", "reach a TLS admin address with this client certificate (PEM, of the mesh's CA, its SPIFFE identity on the replica's --admin-readers or --admin-writers)")
	fs.StringVar(&a.key, "tls-key", "", "the key of --tls-cert (PEM)")
	fs.StringVar(&a.ca, "ca", "", "with --tls-cert: the CA bundle the replica's certificate must chain to (the mesh's root)")
	fs.StringVar(&a.identity, "replica-identity", "istio-system/*", "with --tls-cert: the identities a replica's certificate may carry (namespace/service-account, namespace/*, or a SPIFFE URI)")
	fs.DurationVar(&a.timeout, "timeout", 10*time.Second, "how long to wait for the replica's answer")
	if len(outputs) > 0 {
		fs.StringVarP(&a.output, "output", "o", outputs[0], "output format: "+strings.Join(outputs, ", "))
		_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(outputs, cobra.ShellCompDirectiveNoFileComp))
		cmd.PreRunE = func(*cobra.Command, []string) error {
			for _, o := range outputs {
				if a.output == o {
					return nil
				}
			}
			return fmt.Errorf("-o %q: want %s", a.output, strings.Join(outputs, ", "))
		}
	}
	_ = cmd.RegisterFlagCompletionFunc("tenant", a.completeTenants)
}

// call dials the replica, runs f with a deadline and closes the
// connection; a refusal or a missing replica comes back as an error
// that says what to do.
func (a *adminConn) call(f func(context.Context, adminv1.AdminServiceClient) error) error {
	creds := insecure.NewCredentials()
	switch {
	case a.cert != "" || a.key != "" || a.ca != "":
		if a.cert == "" || a.key == "" || a.ca == "" {
			return fmt.Errorf("a TLS admin address needs all of --tls-cert, --tls-key and --ca")
		}
		allow, err := identity.ParseAllowList(a.identity)
		if err != nil {
			return fmt.Errorf("--replica-identity: %w", err)
		}
		certs, err := identity.LoadCerts(identity.Files{Cert: a.cert, Key: a.key, ClientCA: a.ca}, nil)
		if err != nil {
			return err
		}
		cfg := certs.ClientConfig(allow)
		cfg.NextProtos = []string{"h2"}
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient("passthrough:///"+a.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("--admin-addr %q: %w", a.addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	defer cancel()
	return a.explain(f(ctx, adminv1.NewAdminServiceClient(conn)))
}

// explain turns a gRPC status into what the operator does about it.
func (a *adminConn) explain(err error) error {
	st, ok := status.FromError(err)
	if err == nil || !ok {
		return err
	}
	msg := st.Message()
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded:
		tls := ""
		if a.cert == "" {
			tls = "; if it serves TLS, pass --tls-cert, --tls-key and --ca"
		}
		return &exitError{code: exitFailed, msg: fmt.Sprintf("the replica at %s did not answer: %s (is xdshard serve running there? pass --admin-addr%s)", a.addr, msg, tls)}
	case codes.Unauthenticated, codes.PermissionDenied:
		return &exitError{code: exitFailed, msg: fmt.Sprintf("the replica at %s refused: %s", a.addr, msg)}
	}
	return &exitError{code: exitFailed, msg: msg}
}

// completionTimeout bounds a completion's call: a shell waits on it.
const completionTimeout = time.Second

// quick is a for completion: the same replica, a short deadline.
func (a *adminConn) quick() *adminConn {
	q := *a
	q.timeout = min(a.timeout, completionTimeout)
	return &q
}

// completeTenants completes --tenant with the tenants of the replica
// the command line names.
func (a *adminConn) completeTenants(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	var names []string
	_ = a.quick().call(func(ctx context.Context, c adminv1.AdminServiceClient) error {
		resp, err := c.ListTenants(ctx, &adminv1.ListTenantsRequest{})
		for _, t := range resp.GetTenants() {
			names = append(names, t.GetName())
		}
		return err
	})
	return names, cobra.ShellCompDirectiveNoFileComp
}

// completeProxies completes a PROXY argument with the connected proxies.
func (a *adminConn) completeProxies(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []string
	_ = a.quick().call(func(ctx context.Context, c adminv1.AdminServiceClient) error {
		resp, err := c.ProxyStatus(ctx, &adminv1.ProxyStatusRequest{})
		for _, p := range resp.GetProxies() {
			if p.GetView() != "mcp" && p.GetView() != "peer" {
				names = append(names, p.GetName())
			}
		}
		return err
	})
	return names, cobra.ShellCompDirectiveNoFileComp
}

// printMessage prints m as -o json or yaml: the message's protojson, the
// API's own JSON mapping (field names in lowerCamelCase).
func printMessage(w io.Writer, format string, m proto.Message) error {
	js, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return err
	}
	if format == "yaml" {
		// protojson's output is not stable byte for byte; YAML is made from
		// its parsed form.
		var v any
		if err := json.Unmarshal(js, &v); err != nil {
			return err
		}
		out, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(out)
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", js)
	return err
}

// tenantFlag adds the required --tenant flag.
func tenantFlag(cmd *cobra.Command, tenant *string) {
	cmd.Flags().StringVar(tenant, "tenant", "", "the tenant (required; xdshard tenants lists them)")
	_ = cmd.MarkFlagRequired("tenant")
}
