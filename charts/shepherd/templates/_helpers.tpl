{{/* Full name of the objects: the release name, prefixed by the chart name unless it already contains it. */}}
{{- define "shepherd.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Labels that select the operator's pods; they never change across upgrades. */}}
{{- define "shepherd.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object of the chart. */}}
{{- define "shepherd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "shepherd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "shepherd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "shepherd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image; the tag defaults to the chart's appVersion. */}}
{{- define "shepherd.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The namespaces whose Releases the operator handles, as a JSON list; empty for all of them. */}}
{{- define "shepherd.watchNamespaces" -}}
{{- $value := .Values.watchNamespace }}
{{- if kindIs "string" $value }}
{{- compact (list $value) | toJson }}
{{- else }}
{{- uniq $value | toJson }}
{{- end }}
{{- end }}

{{/* The leader Lease, in the release's namespace. */}}
{{- define "shepherd.leaseName" -}}
{{- include "shepherd.fullname" . }}
{{- end }}

{{/* Every leader Lease as a YAML flow list: the Lease, or with sharding.shards > 1 each shard's, named as
`shepherd run --shards` derives it from --lease-name: <lease>-shard-<index>-of-<shards>. */}}
{{- define "shepherd.leaseNames" -}}
{{- $lease := include "shepherd.leaseName" . }}
{{- $shards := int .Values.sharding.shards }}
{{- $names := list $lease }}
{{- if gt $shards 1 }}
{{- $names = list }}
{{- range $index := until $shards }}
{{- $names = append $names (printf "%s-shard-%d-of-%d" $lease $index $shards) }}
{{- end }}
{{- end }}
{{- printf "[%s]" (join ", " $names) }}
{{- end }}
