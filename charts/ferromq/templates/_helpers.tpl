{{/* Name of the chart, overridable with nameOverride. */}}
{{- define "ferromq.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the release's objects. */}}
{{- define "ferromq.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "ferromq.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "ferromq.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object of the release, without a component. */}}
{{- define "ferromq.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ferromq
app.kubernetes.io/name: {{ include "ferromq.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Labels of the operator's own objects. */}}
{{- define "ferromq.labels" -}}
{{ include "ferromq.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Labels of the example cluster's resources; the pre-delete hook selects by them. */}}
{{- define "ferromq.exampleLabels" -}}
{{ include "ferromq.commonLabels" . }}
app.kubernetes.io/component: example-cluster
{{- end -}}

{{/* Selector of the example cluster's resources. */}}
{{- define "ferromq.exampleSelector" -}}
app.kubernetes.io/instance={{ .Release.Name }},app.kubernetes.io/component=example-cluster
{{- end -}}

{{/* Labels that select the operator pods. */}}
{{- define "ferromq.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferromq.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The operator's ServiceAccount name. */}}
{{- define "ferromq.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ferromq.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The broker image of the example cluster. */}}
{{- define "ferromq.brokerImage" -}}
{{- default (printf "ghcr.io/ferromq/ferromq:%s" .Chart.AppVersion) .Values.exampleCluster.image -}}
{{- end -}}
