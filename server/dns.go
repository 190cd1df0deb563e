package server

import (
	"fmt"
	"slices"
	"strings"

	ndsv1 "github.com/xdshard/xdshard/proto/nds/v1"
	"github.com/xdshard/xdshard/server/admin"
	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// diagnoseDNS says what a proxy's tenant resolves host to through its
// DNS name table (NDS, what istio-agent answers from), or why it does
// not: no such service; another tenant's, not exported to this one; no
// address; another service with the same host; and whether the proxy has
// the table at all (not connected, NDS not asked for, not acknowledged).
// proxy names a connected proxy (pod.namespace, or part of its node ID);
// without it, namespace says whose view to look at.
func (r *Replica) diagnoseDNS(proxy, namespace, host string) (admin.DNSAnswer, error) {
	host = strings.TrimSuffix(strings.TrimSpace(host), ".")
	if host == "" || len(host) > 253 {
		return admin.DNSAnswer{}, fmt.Errorf("a host name of 1 to 253 characters is needed, got %q", host)
	}
	ans := admin.DNSAnswer{Host: host, Proxy: proxy, Namespace: namespace}
	if proxy != "" {
		var found *struct{ node, tenant, sync, nack string }
		for _, c := range r.xds.Clients() {
			if c.View == snapshot.ViewMCP || c.View == snapshot.ViewPeer || !strings.Contains(c.Node, proxy) {
				continue
			}
			f := struct{ node, tenant, sync, nack string }{node: c.Node, tenant: c.Tenant, sync: "NOT_REQUESTED"}
			if st, ok := c.Types[snapshot.NameTableType]; ok {
				f.sync = st.Sync
				if st.LastNACK != nil {
					f.nack = st.LastNACK.Message
				}
			}
			found = &f
		}
		if found == nil {
			return ans, fmt.Errorf("proxy %q is not connected to this replica (see /debug/syncz; with sharding, ask the replica it is on); pass --namespace to look at a namespace's view instead", proxy)
		}
		ans.Node, ans.Tenant, ans.NDS = found.node, found.tenant, found.sync
		if ans.Namespace == "" {
			ans.Namespace = nodeNamespace(found.node)
		}
		switch found.sync {
		case "NOT_REQUESTED":
			ans.Notes = append(ans.Notes, "the proxy did not ask for the DNS name table (NDS): istio-agent's DNS proxy is off (ISTIO_META_DNS_CAPTURE), so it asks the cluster DNS, not xdshard")
		case "ERROR":
			ans.Notes = append(ans.Notes, "the proxy rejected its last name table: "+found.nack)
		case "STALE":
			ans.Notes = append(ans.Notes, "the proxy has not acknowledged its latest name table yet (STALE)")
		}
	}
	if ans.Namespace == "" {
		return ans, fmt.Errorf("pass a connected proxy, or --namespace NS whose view to look at")
	}
	if ans.Tenant == "" {
		t, ok := r.mesh.TenantOf(ans.Namespace)
		if !ok {
			return ans, fmt.Errorf("namespace %q belongs to no tenant", ans.Namespace)
		}
		ans.Tenant = t
	}
	// The names tried, in the order istio-agent's search domains expand a
	// short name from the proxy's namespace.
	cluster := strings.TrimPrefix(model.DomainSuffix, "svc.") // cluster.local
	tries := []string{host}
	if !strings.HasSuffix(host, "."+cluster) {
		tries = []string{host + "." + ans.Namespace + ".svc." + cluster, host + ".svc." + cluster, host + "." + cluster, host}
	}
	ans.Tried = tries
	table, err := nameTable(r.store.Current(ans.Tenant))
	if err != nil {
		return ans, err
	}
	for _, h := range tries {
		if info := table.GetTable()[h]; info != nil {
			ans.Resolves, ans.FQDN, ans.IPs, ans.Registry = true, h, info.Ips, info.Registry
			return ans, nil
		}
	}
	// Not in the table: find it in the mesh to say why.
	view := r.mesh.View(ans.Tenant)
	for _, h := range tries {
		svcs := r.mesh.ServicesNamed(h)
		if len(svcs) == 0 {
			continue
		}
		ans.FQDN = h
		for _, s := range svcs {
			ref := fmt.Sprintf("%s %s/%s", s.Kind, s.Namespace, s.Name)
			owner, _ := r.mesh.TenantOf(s.Namespace)
			visible := slices.ContainsFunc(view.Services, func(v *model.Service) bool { return v == s })
			switch {
			case !visible && owner != ans.Tenant:
				ans.Reasons = append(ans.Reasons, fmt.Sprintf("%s belongs to tenant %s and is not exported to tenant %s (exportTo %v); export it (networking.istio.io/exportTo) or trust the tenant", ref, owner, ans.Tenant, s.ExportTo))
			case !visible:
				ans.Reasons = append(ans.Reasons, fmt.Sprintf("%s is not visible to its own tenant (exportTo %v)", ref, s.ExportTo))
			case len(s.Addresses) == 0:
				ans.Reasons = append(ans.Reasons, fmt.Sprintf("%s has no address (a headless Service, or a ServiceEntry without addresses): istio-agent's DNS proxy answers only services with a virtual IP, and leaves this name to the cluster DNS", ref))
			case countHost(view.Services, h) > 1:
				ans.Reasons = append(ans.Reasons, fmt.Sprintf("%s is shadowed: another service of the tenant's view has the same host %s and is the one served (rename a host, or narrow its exportTo)", ref, h))
			default:
				ans.Reasons = append(ans.Reasons, fmt.Sprintf("%s is visible to tenant %s, but the egress hosts of a Sidecar that applies to its proxies exclude it; add %s/%s to the Sidecar's egress hosts", ref, ans.Tenant, s.Namespace, h))
			}
		}
		return ans, nil
	}
	ans.Reasons = append(ans.Reasons, fmt.Sprintf("no service of the mesh is named %s (tried %s)", host, strings.Join(tries, ", ")))
	return ans, nil
}

// nameTable decodes a tenant's NDS name table.
func nameTable(snap *snapshot.Snapshot) (*ndsv1.NameTable, error) {
	nt := &ndsv1.NameTable{}
	set := snap.Set(snapshot.ViewNDS, snapshot.NameTableType)
	if set == nil || len(set.Items) == 0 {
		return nt, nil
	}
	if err := set.Items[0].Body.UnmarshalTo(nt); err != nil {
		return nil, fmt.Errorf("the tenant's name table: %w", err)
	}
	return nt, nil
}

// nodeNamespace is the namespace of an Istio node ID
// (type~ip~pod.namespace~namespace.svc.cluster.local).
func nodeNamespace(node string) string {
	parts := strings.Split(node, "~")
	if len(parts) == 4 {
		if ns, _, ok := strings.Cut(parts[3], "."); ok {
			return ns
		}
	}
	return ""
}

// countHost counts the services named host.
func countHost(svcs []*model.Service, host string) int {
	n := 0
	for _, s := range svcs {
		if s.Hostname == host {
			n++
		}
	}
	return n
}
