package xds

import (
	ndsv1 "github.com/xdshard/xdshard/proto/nds/v1"
	"github.com/xdshard/xdshard/snapshot/model"
)

// NameTableName is the name of the tenant's one NDS resource.
const NameTableName = "name-table"

// nameTable is the DNS table istio-agent answers from: every visible
// service with an address, under its FQDN, with the short name and
// namespace the agent uses to expand search domains.
func (t *translation) nameTable() {
	nt := &ndsv1.NameTable{Table: map[string]*ndsv1.NameTable_NameInfo{}}
	for _, s := range t.services {
		if t.byHost[s.Hostname] != s || len(s.Addresses) == 0 {
			continue
		}
		info := &ndsv1.NameTable_NameInfo{Ips: s.Addresses, Registry: "External"}
		if s.Kind == model.KindService {
			info.Registry, info.Shortname, info.Namespace = "Kubernetes", s.Name, s.Namespace
		}
		nt.Table[s.Hostname] = info
	}
	t.out.nds = []named{{name: NameTableName, msg: nt}}
}
