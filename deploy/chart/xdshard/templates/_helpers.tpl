{{/*
The name of every object: xdshard, or xdshard-<revision>. As in Istio's
istiod chart, names do not follow the release name.
*/}}
{{- define "xdshard.name" -}}
xdshard{{ if .Values.revision }}-{{ .Values.revision }}{{ end }}
{{- end }}

{{/*
The labels that select this install's pods. A revision's pods are
app: xdshard-<revision>, so the default install's selectors (app: xdshard,
as deploy/xdshard.yaml has always had) never pick them.
*/}}
{{- define "xdshard.selectorLabels" -}}
app: {{ include "xdshard.name" . }}
{{- if .Values.revision }}
xdshard.io/rev: {{ .Values.revision | quote }}
{{- end }}
{{- end }}

{{/* The labels of every object. */}}
{{- define "xdshard.labels" -}}
{{ include "xdshard.selectorLabels" . }}
app.kubernetes.io/name: xdshard
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Service's DNS name, the one istiod and istio-agent dial. */}}
{{- define "xdshard.host" -}}
{{ include "xdshard.name" . }}.{{ .Release.Namespace }}.svc
{{- end }}

{{/* The Secret holding tls.crt, tls.key and ca.crt. */}}
{{- define "xdshard.tlsSecret" -}}
{{ .Values.tls.secretName | default (printf "%s-tls" (include "xdshard.name" .)) }}
{{- end }}

{{/*
The Secret istiod reads xdshard's CA from (configSources credentialName),
in istiod's namespace: mcp.credentialName; else the TLS Secret when xdshard
is in istiod's namespace; else <name>-ca, which the NOTES say how to make.
*/}}
{{- define "xdshard.credentialName" -}}
{{- if .Values.mcp.credentialName }}
{{- .Values.mcp.credentialName }}
{{- else if eq .Release.Namespace .Values.global.istioNamespace }}
{{- include "xdshard.tlsSecret" . }}
{{- else }}
{{- include "xdshard.name" . }}-ca
{{- end }}
{{- end }}

{{/*
The namespace of the replicas' Leases. Every Lease labelled
xdshard.io/member in it is a member of one ring, so two installs (two
revisions) must not share it.
*/}}
{{- define "xdshard.leaseNamespace" -}}
{{- $ns := .Values.lease.namespace | default .Release.Namespace }}
{{- if and .Values.revision (eq $ns .Release.Namespace) }}
{{- fail (printf "revision %q needs lease.namespace set to a namespace of its own: the replicas of every install whose Leases are in %s form one ring" .Values.revision $ns) }}
{{- end }}
{{- $ns }}
{{- end }}

{{- define "xdshard.image" -}}
{{- if contains "/" .Values.image }}
{{- .Values.image }}
{{- else }}
{{- $hub := .Values.hub | default .Values.global.hub }}
{{- $tag := .Values.tag | default .Values.global.tag | default .Chart.AppVersion }}
{{- if $hub }}{{ $hub }}/{{ end }}{{ .Values.image }}:{{ $tag }}
{{- end }}
{{- end }}

{{/* The admin port's scheme: it serves TLS whenever the others do. */}}
{{- define "xdshard.adminScheme" -}}
{{ if .Values.tls.enabled }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{/*
meshConfig.discoverySelectors as JSON for serve --discovery-selectors, or
nothing when there are none. What serve would refuse fails here, at
install, with the value's path; serve checks the rest (label syntax).
*/}}
{{- define "xdshard.discoverySelectors" -}}
{{- $sels := (.Values.meshConfig | default dict).discoverySelectors }}
{{- if $sels }}
{{- if not (kindIs "slice" $sels) }}
{{- fail (printf "meshConfig.discoverySelectors: want a list of label selectors (as istiod's), such as [{matchLabels: {istio-discovery: enabled}}]; got %s" (toJson $sels)) }}
{{- end }}
{{- range $i, $s := $sels }}
{{- if not (kindIs "map" $s) }}
{{- fail (printf "meshConfig.discoverySelectors[%d]: want a label selector ({matchLabels: ..., matchExpressions: [...]}); got %s" $i (toJson $s)) }}
{{- end }}
{{- range $k, $_ := $s }}
{{- if not (has $k (list "matchLabels" "matchExpressions")) }}
{{- fail (printf "meshConfig.discoverySelectors[%d]: unknown field %q; a label selector has matchLabels and matchExpressions" $i $k) }}
{{- end }}
{{- end }}
{{- range $j, $e := $s.matchExpressions }}
{{- if not (has (($e | default dict).operator | toString) (list "In" "NotIn" "Exists" "DoesNotExist")) }}
{{- fail (printf "meshConfig.discoverySelectors[%d].matchExpressions[%d].operator %s: want In, NotIn, Exists or DoesNotExist" $i $j (toJson ($e | default dict).operator)) }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $sels }}
{{- end }}
{{- end }}
