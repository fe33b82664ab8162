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

{{/* The container every Ray pod runs: image, data volume and pipeline file. */}}
{{- define "streamvision.container" -}}
image: "{{ .root.Values.image.repository }}:{{ .root.Values.image.tag }}"
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
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
