{{/* Names and labels. */}}
{{- define "uplink.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "uplink.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "uplink.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "uplink.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "uplink.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "uplink.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: uplink
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "ingress"). */}}
{{- define "uplink.selector" -}}
app.kubernetes.io/name: {{ include "uplink.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "uplink.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "uplink.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "uplink.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret a reference names: its own secretName, else secrets.name, else the release's. */}}
{{- define "uplink.secretName" -}}
{{- $ref := .ref }}
{{- default (default (include "uplink.fullname" .root) .root.Values.secrets.name) $ref.secretName }}
{{- end }}

{{/* One variable from a Secret: (dict "root" $ "name" "UPLINK_TOKEN" "ref" .Values.ingress.token). */}}
{{- define "uplink.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "uplink.secretName" . }}
      key: {{ required (printf "%s: the Secret's key" .name) .ref.key }}
{{- end }}

{{/* Whether an optional API is used: (dict "setting" "auto" "api" "keda.sh/v1alpha1" "root" $). */}}
{{- define "uplink.wants" -}}
{{- $setting := toString .setting }}
{{- if eq $setting "true" }}true
{{- else if eq $setting "auto" }}{{ if .root.Capabilities.APIVersions.Has .api }}true{{ end }}
{{- else if ne $setting "false" }}{{ fail (printf "%s: auto, true or false, not %q" .what $setting) }}
{{- end }}
{{- end }}

{{- define "uplink.saslPasswordMechanisms" -}}PLAIN SCRAM-SHA-256 SCRAM-SHA-512{{- end }}

{{/* The Kafka client settings every uplink process reads (non-secret and secret). */}}
{{- define "uplink.kafkaEnv" -}}
{{- $k := .Values.kafka -}}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ required "kafka.bootstrapServers: the Kafka cluster's host:port list" $k.bootstrapServers | quote }}
- name: UPLINK_KAFKA_CLIENT_ID
  value: {{ $k.clientId | quote }}
- name: UPLINK_KAFKA_SECURITY_PROTOCOL
  value: {{ $k.securityProtocol | quote }}
{{- if $k.maxRequestSize }}
- name: UPLINK_KAFKA_MAX_REQUEST_SIZE
  value: {{ $k.maxRequestSize | quote }}
{{- end }}
{{- $mechanism := $k.sasl.mechanism }}
{{- if hasPrefix "SASL" $k.securityProtocol }}
- name: UPLINK_KAFKA_SASL_MECHANISM
  value: {{ required "kafka.sasl.mechanism: SASL needs a mechanism" $mechanism | quote }}
{{- if has $mechanism (splitList " " (include "uplink.saslPasswordMechanisms" .)) }}
- name: UPLINK_KAFKA_SASL_USERNAME
  value: {{ required "kafka.sasl.username" $k.sasl.username | quote }}
{{ include "uplink.secretEnv" (dict "root" . "name" "UPLINK_KAFKA_SASL_PASSWORD" "ref" $k.sasl.password) }}
{{- else if eq $mechanism "OAUTHBEARER" }}
- name: UPLINK_KAFKA_SASL_OAUTH_TOKEN_URL
  value: {{ required "kafka.sasl.oauth.tokenUrl" $k.sasl.oauth.tokenUrl | quote }}
- name: UPLINK_KAFKA_SASL_OAUTH_CLIENT_ID
  value: {{ required "kafka.sasl.oauth.clientId" $k.sasl.oauth.clientId | quote }}
{{- if $k.sasl.oauth.scope }}
- name: UPLINK_KAFKA_SASL_OAUTH_SCOPE
  value: {{ $k.sasl.oauth.scope | quote }}
{{- end }}
{{ include "uplink.secretEnv" (dict "root" . "name" "UPLINK_KAFKA_SASL_OAUTH_CLIENT_SECRET" "ref" $k.sasl.oauth.clientSecret) }}
{{- else if eq $mechanism "AWS_MSK_IAM" }}
- name: UPLINK_KAFKA_AWS_REGION
  value: {{ required "kafka.sasl.awsRegion: the MSK cluster's region" $k.sasl.awsRegion | quote }}
{{- else }}
{{- fail (printf "kafka.sasl.mechanism: %q is not PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM" $mechanism) }}
{{- end }}
{{- end }}
{{- if $k.tls.ca.secretName }}
- name: UPLINK_KAFKA_SSL_CAFILE
  value: /etc/uplink/kafka/ca/{{ $k.tls.ca.key }}
{{- end }}
{{- if $k.tls.clientCert.secretName }}
- name: UPLINK_KAFKA_SSL_CERTFILE
  value: /etc/uplink/kafka/client/{{ $k.tls.clientCert.certKey }}
- name: UPLINK_KAFKA_SSL_KEYFILE
  value: /etc/uplink/kafka/client/{{ $k.tls.clientCert.keyKey }}
{{- if $k.tls.keyPassword.key }}
{{ include "uplink.secretEnv" (dict "root" . "name" "UPLINK_KAFKA_SSL_KEY_PASSWORD" "ref" $k.tls.keyPassword) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Topics, the registry, logging: every uplink process. */}}
{{- define "uplink.commonEnv" -}}
{{ include "uplink.kafkaEnv" . }}
- name: UPLINK_TOPIC_MESSAGES
  value: {{ .Values.topics.messages | quote }}
- name: UPLINK_MESSAGES_PARTITIONS
  value: {{ .Values.topics.messagesPartitions | quote }}
- name: UPLINK_TOPIC_PARTITIONS
  value: {{ .Values.topics.partitions | quote }}
- name: UPLINK_REPLICATION_FACTOR
  value: {{ .Values.topics.replicationFactor | quote }}
- name: UPLINK_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: UPLINK_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- $r := .Values.schemaRegistry }}
{{- if $r.url }}
- name: UPLINK_SCHEMA_REGISTRY_URL
  value: {{ $r.url | quote }}
{{- if $r.username }}
- name: UPLINK_SCHEMA_REGISTRY_USERNAME
  value: {{ $r.username | quote }}
{{ include "uplink.secretEnv" (dict "root" . "name" "UPLINK_SCHEMA_REGISTRY_PASSWORD" "ref" $r.password) }}
{{- end }}
{{- if $r.ca.secretName }}
- name: UPLINK_SCHEMA_REGISTRY_CA_FILE
  value: /etc/uplink/registry/{{ $r.ca.key }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The object store's variables (archive, media). */}}
{{- define "uplink.s3Env" -}}
{{- $s := .Values.objectStore }}
{{- if $s.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ $s.endpoint | quote }}
{{- end }}
- name: AWS_REGION
  value: {{ $s.region | quote }}
{{- if $s.pathStyle }}
- name: UPLINK_S3_PATH_STYLE
  value: {{ $s.pathStyle | quote }}
{{- end }}
{{- if eq $s.credentials "static" }}
{{ include "uplink.secretEnv" (dict "root" . "name" "AWS_ACCESS_KEY_ID" "ref" $s.accessKeyId) }}
{{ include "uplink.secretEnv" (dict "root" . "name" "AWS_SECRET_ACCESS_KEY" "ref" $s.secretAccessKey) }}
{{- else if ne $s.credentials "serviceAccount" }}
{{- fail (printf "objectStore.credentials: static or serviceAccount, not %q" $s.credentials) }}
{{- end }}
{{- end }}

{{/* name: value pairs as env entries. */}}
{{- define "uplink.plainEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}

{{/* Volumes every uplink pod has: a writable /tmp, the Kafka and registry TLS files. */}}
{{- define "uplink.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- if .Values.kafka.tls.ca.secretName }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.ca.secretName }}
    items: [{key: {{ .Values.kafka.tls.ca.key | quote }}, path: {{ .Values.kafka.tls.ca.key | quote }}}]
{{- end }}
{{- with .Values.kafka.tls.clientCert }}
{{- if .secretName }}
- name: kafka-client
  secret:
    secretName: {{ .secretName }}
    items:
      - {key: {{ .certKey | quote }}, path: {{ .certKey | quote }}}
      - {key: {{ .keyKey | quote }}, path: {{ .keyKey | quote }}}
{{- end }}
{{- end }}
{{- if and .Values.schemaRegistry.url .Values.schemaRegistry.ca.secretName }}
- name: registry-ca
  secret:
    secretName: {{ .Values.schemaRegistry.ca.secretName }}
    items: [{key: {{ .Values.schemaRegistry.ca.key | quote }}, path: {{ .Values.schemaRegistry.ca.key | quote }}}]
{{- end }}
{{- end }}

{{- define "uplink.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.tls.ca.secretName }}
- name: kafka-ca
  mountPath: /etc/uplink/kafka/ca
  readOnly: true
{{- end }}
{{- if .Values.kafka.tls.clientCert.secretName }}
- name: kafka-client
  mountPath: /etc/uplink/kafka/client
  readOnly: true
{{- end }}
{{- if and .Values.schemaRegistry.url .Values.schemaRegistry.ca.secretName }}
- name: registry-ca
  mountPath: /etc/uplink/registry
  readOnly: true
{{- end }}
{{- end }}

{{/* The pod-level parts every uplink pod shares. */}}
{{- define "uplink.podSpec" -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The router's rules: the value, else a file that sends every push to one topic. The
ConfigMap must hold no secret: endpoints take their keys with secret_env. */}}
{{- define "uplink.routerRules" -}}
{{- $rules := .Values.router.rules | default "[default]\ntopic = \"uplink.router.unmatched.v1\"\n" }}
{{- if regexMatch "(?m)^\\s*secret\\s*=" $rules }}
{{- fail "router.rules: an endpoint's `secret` would sit in a ConfigMap: use secret_env and router.secretEnv" }}
{{- end }}
{{- $rules }}
{{- end }}
