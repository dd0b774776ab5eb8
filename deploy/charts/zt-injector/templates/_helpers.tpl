{{/* Object names: the release name, or <release>-zt-injector when it does not say so. */}}
{{- define "zt-injector.fullname" -}}
{{- if contains "zt-injector" .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-zt-injector" .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the serving CA and certificate, and the Lease electing the rotating replica. */}}
{{- define "zt-injector.tlsName" -}}
{{- printf "%s-tls" (include "zt-injector.fullname" .) -}}
{{- end -}}

{{- define "zt-injector.labels" -}}
app.kubernetes.io/name: zt-injector
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: zt-platform
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "zt-injector.selector" -}}
app.kubernetes.io/name: zt-injector
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
