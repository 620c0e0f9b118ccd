{{/* Names: <release>-streamssl, unless the release name already contains the chart name. */}}
{{- define "streamssl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "streamssl.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels; call with (dict "ctx" $ "component" "serving"). */}}
{{- define "streamssl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamssl.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "streamssl.labels" -}}
{{ include "streamssl.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: streamssl
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Image reference; call with (dict "ctx" $ "image" .Values.images.serving "flavour" "cpu"|"cuda"|""). */}}
{{- define "streamssl.image" -}}
{{- $tag := .image.tag | default .ctx.Chart.AppVersion -}}
{{- if and .flavour (not .image.tag) -}}
{{- $tag = printf "%s-%s" $tag .flavour -}}
{{- end -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}

{{- define "streamssl.kafkaPasswordSecret" -}}
{{- .Values.kafka.sasl.existingSecret | default (printf "%s-kafka" (include "streamssl.fullname" .)) -}}
{{- end -}}

{{/* The bus and its security settings as STREAMSSL_* variables (environment beats flags and files). */}}
{{- define "streamssl.kafkaEnv" -}}
- name: STREAMSSL_BUS
  value: {{ printf "kafka://%s" .Values.kafka.bootstrapServers | quote }}
- name: STREAMSSL_KAFKA__SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- if .Values.kafka.sasl.mechanism }}
- name: STREAMSSL_KAFKA__SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: STREAMSSL_KAFKA__SASL_PLAIN_USERNAME
  value: {{ .Values.kafka.sasl.username | quote }}
- name: STREAMSSL_KAFKA__SASL_PLAIN_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "streamssl.kafkaPasswordSecret" . }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- if .Values.kafka.tls.caSecret }}
- name: STREAMSSL_KAFKA__SSL_CAFILE
  value: /etc/streamssl/kafka-ca/{{ .Values.kafka.tls.caKey }}
{{- end }}
{{- if .Values.kafka.tls.clientSecret }}
- name: STREAMSSL_KAFKA__SSL_CERTFILE
  value: /etc/streamssl/kafka-client/{{ .Values.kafka.tls.certKey }}
- name: STREAMSSL_KAFKA__SSL_KEYFILE
  value: /etc/streamssl/kafka-client/{{ .Values.kafka.tls.keyKey }}
{{- end }}
{{- if hasPrefix "S" .Values.kafka.securityProtocol }}
- name: STREAMSSL_KAFKA__SSL_CHECK_HOSTNAME
  value: {{ .Values.kafka.tls.checkHostname | quote }}
{{- end }}
- name: STREAMSSL_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: STREAMSSL_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
{{- end -}}

{{- define "streamssl.kafkaVolumeMounts" -}}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/streamssl/kafka-ca
  readOnly: true
{{- end }}
{{- if .Values.kafka.tls.clientSecret }}
- name: kafka-client
  mountPath: /etc/streamssl/kafka-client
  readOnly: true
{{- end }}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "streamssl.kafkaVolumes" -}}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
{{- end }}
{{- if .Values.kafka.tls.clientSecret }}
- name: kafka-client
  secret:
    secretName: {{ .Values.kafka.tls.clientSecret }}
    defaultMode: 0440
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end -}}

{{- define "streamssl.registryClaim" -}}
{{- .Values.registry.existingClaim | default (printf "%s-registry" (include "streamssl.fullname" .)) -}}
{{- end -}}

{{/* Pod annotations for annotation-based scraping; call with (dict "ctx" $ "port" N "extra" map). */}}
{{- define "streamssl.podAnnotations" -}}
{{- if .ctx.Values.monitoring.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* An exec-free HTTP probe; call with (dict "path" P "port" NAME "period" S "failures" N). */}}
{{- define "streamssl.httpProbe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
periodSeconds: {{ .period | default 10 }}
timeoutSeconds: 5
failureThreshold: {{ .failures | default 3 }}
{{- end -}}
