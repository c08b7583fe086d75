{{/* Names and labels. */}}
{{- define "smsgw.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "smsgw.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "smsgw.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/* The name of a service's own port: `smpp` for the SMPP server, else `http`. */}}
{{- define "smsgw.portName" -}}
{{- if eq . "smpp-server" }}smpp{{ else }}http{{ end -}}
{{- end -}}

{{/* The TOML config of one service: listeners and Kafka from the chart, then the
     service's own `config` merged over them. */}}
{{- define "smsgw.config" -}}
{{- $root := .root -}}
{{- $svc := .svc -}}
{{- $kafka := dict "brokers" $root.Values.kafka.brokers "properties" $root.Values.kafka.properties "topics" (dict "prefix" $root.Values.kafka.topicPrefix) "assignment" $root.Values.kafka.assignment -}}
{{- $base := dict "kafka" $kafka -}}
{{- if has .name (list "ingest" "smpp-server") -}}
{{- $_ := set $base "listen" (printf "0.0.0.0:%v" $svc.port) -}}
{{- end -}}
{{- $_ := set $base "admin_listen" (printf "0.0.0.0:%v" $svc.metricsPort) -}}
{{- if eq .name "optout" -}}
{{- $_ := set $base "api_listen" (printf "0.0.0.0:%v" $svc.port) -}}
{{- end -}}
{{- if and (eq .name "dispatcher") (gt (int $svc.webhookPort) 0) -}}
{{- $_ := set $base "webhook_listen" (printf "0.0.0.0:%v" $svc.webhookPort) -}}
{{- end -}}
{{- /* Helm reads every number in values as a float, and toToml writes 2 as 2.0, which
     the services' integer fields (binds, window, ..._ms) refuse: whole numbers are
     written as integers (a float field reads an integer fine). */ -}}
{{- regexReplaceAll "(?m)^(\\s*[A-Za-z0-9_-]+ = -?[0-9]+)\\.0$" (toToml (mustMergeOverwrite $base (deepCopy $svc.config))) "${1}" -}}
{{- end -}}
