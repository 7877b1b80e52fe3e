{{/*
Object names are fixed, as in the kustomize base: the operator's Lease is `keyward-operator`
and its Role names that Lease, and the ClusterRole is cluster-wide, so one release per cluster.
*/}}

{{/* Labels of every object: the kustomize base's, plus Helm's. */}}
{{- define "keyward.labels" -}}
app.kubernetes.io/name: keyward
app.kubernetes.io/component: operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The operator pods' selector: the kustomize base's, so that either install can replace the other. */}}
{{- define "keyward.selectorLabels" -}}
app.kubernetes.io/name: keyward
app.kubernetes.io/component: operator
{{- end }}

{{- define "keyward.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{ printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
