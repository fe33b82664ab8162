{{/* Names and labels shared by every template. */}}
{{- define "streamvision.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "streamvision.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Labels that pick this release's pods (Ray pods add component: ray, the submitter component: submitter). */}}
{{- define "streamvision.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The Secret holding the Ray token (key auth_token): the user's, or the one this chart creates. */}}
{{- define "streamvision.authSecretName" -}}
{{- .Values.auth.existingSecret | default (printf "%s-ray-token" (include "streamvision.fullname" .)) -}}
{{- end -}}

{{/* Ray token authentication, for every container that runs Ray or talks to it. */}}
{{- define "streamvision.authEnv" -}}
- name: RAY_AUTH_MODE
  value: token
- name: RAY_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "streamvision.authSecretName" . }}
      key: auth_token
{{- end -}}

{{/* Where the dashboard (and Jobs API) listens: the pod network only when asked, or for the RayJob. */}}
{{- define "streamvision.dashboardHost" -}}
{{- if or .Values.dashboard.exposed .Values.job.enabled -}}0.0.0.0{{- else -}}127.0.0.1{{- end -}}
{{- end -}}

{{/* Kafka security (values kafka.*) as the STREAMVISION_KAFKA_* variables the Kafka clients read
(operators/kafka/settings.py); the username and password come from kafka.existingSecret. */}}
{{- define "streamvision.kafkaEnv" -}}
{{- $k := .Values.kafka -}}
{{- if ne $k.securityProtocol "PLAINTEXT" }}
- name: STREAMVISION_KAFKA_SECURITY_PROTOCOL
  value: {{ $k.securityProtocol | quote }}
{{- end }}
{{- if hasPrefix "SASL_" $k.securityProtocol }}
- name: STREAMVISION_KAFKA_SASL_MECHANISM
  value: {{ $k.saslMechanism | quote }}
- name: STREAMVISION_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $k.existingSecret }}
      key: {{ $k.usernameKey }}
- name: STREAMVISION_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $k.existingSecret }}
      key: {{ $k.passwordKey }}
{{- end }}
{{- if $k.caCertKey }}
- name: STREAMVISION_KAFKA_SSL_CAFILE
  value: /etc/streamvision-kafka/ca.crt
{{- end }}
{{- end -}}

{{/* The container every Ray pod runs: image, Ray token, Kafka security, its writer's data volume
and the pipeline file. Arguments: root, cpu, memory, gpus (optional), env (optional, more variables). */}}
{{- define "streamvision.container" -}}
{{- $env := list (include "streamvision.kafkaEnv" .root) (default "" .env) | join "\n" | trim -}}
image: "{{ .root.Values.image.repository }}:{{ .root.Values.image.tag }}"
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
{{- if or .root.Values.auth.enabled $env }}
env:
  {{- if .root.Values.auth.enabled }}
  {{- include "streamvision.authEnv" .root | nindent 2 }}
  {{- end }}
  {{- with $env }}
  {{- . | nindent 2 }}
  {{- end }}
{{- end }}
resources:
  requests:
    cpu: {{ .cpu | quote }}
    memory: {{ .memory | quote }}
  limits:
    cpu: {{ .cpu | quote }}
    memory: {{ .memory | quote }}
    {{- if .gpus }}
    nvidia.com/gpu: {{ .gpus }}
    {{- end }}
volumeMounts:
  - name: data
    mountPath: {{ .root.Values.storage.mountPath }}
  - name: pipeline
    mountPath: /etc/streamvision
    readOnly: true
  {{- if .root.Values.kafka.caCertKey }}
  - name: kafka-ca
    mountPath: /etc/streamvision-kafka
    readOnly: true
  {{- end }}
{{- end -}}

{{/* The name of a writer's ReadWriteOnce claim: writer is "ingest" or "service". */}}
{{- define "streamvision.claimName" -}}
{{- if eq .writer "ingest" -}}
{{- include "streamvision.fullname" .root }}-data
{{- else -}}
{{- include "streamvision.fullname" .root }}-{{ .writer }}-data
{{- end -}}
{{- end -}}

{{/* Labels of the pods that mount one writer's claim (arguments: root, writer). */}}
{{- define "streamvision.writerLabels" -}}
{{ include "streamvision.selectorLabels" .root }}
streamvision.io/writer: {{ .writer }}
{{- end -}}

{{/* Every pod that mounts a writer's ReadWriteOnce claim runs on the node of the others: such a
volume attaches to one node at a time (arguments: root, writer). */}}
{{- define "streamvision.writerAffinity" -}}
affinity:
  podAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "streamvision.writerLabels" . | nindent 12 }}
{{- end -}}

{{/* Volumes of a Ray pod (arguments: root, writer). */}}
{{- define "streamvision.volumes" -}}
volumes:
  - name: data
    persistentVolumeClaim:
      claimName: {{ include "streamvision.claimName" . }}
  - name: pipeline
    configMap:
      name: {{ include "streamvision.fullname" .root }}-pipeline
  {{- if .root.Values.kafka.caCertKey }}
  - name: kafka-ca
    secret:
      secretName: {{ .root.Values.kafka.existingSecret }}
      items:
        - key: {{ .root.Values.kafka.caCertKey }}
          path: ca.crt
  {{- end }}
{{- end -}}

{{/* The Secret holding the query service's bearer token (key token): the user's, or the chart's. */}}
{{- define "streamvision.serviceTokenSecretName" -}}
{{- .Values.service.existingTokenSecret | default (printf "%s-api-token" (include "streamvision.fullname" .)) -}}
{{- end -}}
