{{/* Names and labels shared by every template. */}}
{{- define "ecr-preflight.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ecr-preflight.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ecr-preflight.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ecr-preflight.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ecr-preflight.labels" -}}
{{ include "ecr-preflight.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "ecr-preflight.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ecr-preflight.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the serving certificate. */}}
{{- define "ecr-preflight.tlsSecret" -}}
{{- printf "%s-tls" (include "ecr-preflight.fullname" .) -}}
{{- end -}}

{{- define "ecr-preflight.webhookPort" -}}
{{- if .Values.hostNetwork.enabled -}}{{ .Values.hostNetwork.webhookPort }}{{- else -}}{{ .Values.ports.webhook }}{{- end -}}
{{- end -}}

{{- define "ecr-preflight.metricsPort" -}}
{{- if .Values.hostNetwork.enabled -}}{{ .Values.hostNetwork.metricsPort }}{{- else -}}{{ .Values.ports.metrics }}{{- end -}}
{{- end -}}
