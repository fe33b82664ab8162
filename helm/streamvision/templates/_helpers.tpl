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

{{/* The container every Ray pod runs: image, data volume and pipeline file. */}}
{{- define "streamvision.container" -}}
image: "{{ .root.Values.image.repository }}:{{ .root.Values.image.tag }}"
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
{{- if .root.Values.auth.enabled }}
env:
  {{- include "streamvision.authEnv" .root | nindent 2 }}
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
{{- end -}}

{{- define "streamvision.volumes" -}}
volumes:
  - name: data
    persistentVolumeClaim:
      claimName: {{ include "streamvision.fullname" . }}-data
  - name: pipeline
    configMap:
      name: {{ include "streamvision.fullname" . }}-pipeline
{{- end -}}
