{{/* Labels on every object: the selector labels of manifests/base plus Helm's own. */}}
{{- define "llmdeploy.labels" -}}
app.kubernetes.io/name: llmdeploy
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The operator pods' selector: the same as manifests/base, so the two installs agree. */}}
{{- define "llmdeploy.selectorLabels" -}}
app.kubernetes.io/name: llmdeploy
app.kubernetes.io/component: operator
{{- end -}}

{{/* One CRD from a file of the chart, kept on uninstall and upgraded with the chart. */}}
{{- define "llmdeploy.keptCRD" -}}
{{- $crd := .crd -}}
{{- $meta := $crd.metadata -}}
{{- $_ := set $meta "annotations" (merge (dict "helm.sh/resource-policy" "keep") ($meta.annotations | default dict)) -}}
{{- $_ := set $meta "labels" (merge (include "llmdeploy.labels" .root | fromYaml) ($meta.labels | default dict)) -}}
{{ toYaml $crd }}
{{- end -}}
