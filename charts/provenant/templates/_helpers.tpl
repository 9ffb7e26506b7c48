{{/*
Object names: "provenant" for a release named provenant (the names config/default uses),
<release>-provenant otherwise, so two releases never share a cluster-scoped name.
*/}}
{{- define "provenant.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains "provenant" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-provenant" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "provenant.controller" -}}
{{ include "provenant.fullname" . }}-controller
{{- end -}}

{{/* Labels of every object: config/default's plus Helm's standard ones. */}}
{{- define "provenant.labels" -}}
app.kubernetes.io/name: provenant
app.kubernetes.io/part-of: provenant
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The controller's pods: the instance too, so two releases in one namespace stay apart. */}}
{{- define "provenant.selectorLabels" -}}
app.kubernetes.io/name: provenant
app.kubernetes.io/component: controller
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "provenant.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- .Values.image.repository }}{{ if $tag }}:{{ $tag }}{{ end }}{{ if .Values.image.digest }}@{{ .Values.image.digest }}{{ end }}
{{- end -}}

{{/*
The controller configuration: values.config with provenance.signingKeySecret from the top-level
value (the Role names the same Secret).
*/}}
{{- define "provenant.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $provenance := get $config "provenance" | default dict -}}
{{- $_ := set $provenance "signingKeySecret" .Values.signingKeySecret -}}
{{- $_ := set $config "provenance" $provenance -}}
{{- toYaml $config -}}
{{- end -}}

{{/*
The Secrets the controller may read (the Role's resourceNames): the signing key, the registry
credentials and each repositoryPolicy rule's credentials the configuration names, and
rbac.extraSecretNames.
*/}}
{{- define "provenant.secretNames" -}}
{{- $names := list .Values.signingKeySecret -}}
{{- $provenance := .Values.config.provenance | default dict -}}
{{- with ($provenance.registry | default dict).credentialsSecret -}}
{{- $names = append $names . -}}
{{- end -}}
{{- range ($provenance.repositoryPolicy | default list) -}}
{{- with .credentialsSecret -}}
{{- $names = append $names . -}}
{{- end -}}
{{- end -}}
{{- $names = concat $names .Values.rbac.extraSecretNames -}}
{{- toJson (uniq $names) -}}
{{- end -}}

{{- define "provenant.pdbEnabled" -}}
{{- $v := .Values.podDisruptionBudget.enabled -}}
{{- if eq (toString $v) "auto" -}}
{{- if gt (int .Values.replicas) 1 }}true{{ end -}}
{{- else if $v -}}
true
{{- end -}}
{{- end -}}
