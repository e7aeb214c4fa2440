{{/*
Names. These helpers read only .Values and .Release, so a parent chart can call the sidecar
templates with (dict "Values" .Values.shardcache "Release" .Release).
*/}}
{{- define "shardcache.name" -}}
{{- default "shardcache" .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "shardcache.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "shardcache.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "shardcache.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shardcache.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "shardcache.labels" -}}
{{ include "shardcache.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "shardcache.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "shardcache.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "shardcache.image" -}}
{{- $tag := .Values.image.tag }}
{{- if and (not $tag) .Chart }}
{{- $tag = .Chart.AppVersion }}
{{- end }}
{{- printf "%s:%s" .Values.image.repository (required "image.tag is needed outside this chart" $tag) }}
{{- end }}

{{/*
The config file: .Values.config with the listeners set from ports and mode.
*/}}
{{- define "shardcache.config" -}}
{{- if or (hasKey .Values.config "listen") (hasKey .Values.config "admin_listen") }}
{{- fail "config.listen and config.admin_listen are set by the chart from ports and mode; remove them" }}
{{- end }}
{{- $config := deepCopy .Values.config }}
{{- $host := ternary "127.0.0.1" "0.0.0.0" (eq .Values.mode "sidecar") }}
{{- $_ := set $config "listen" (printf "%s:%d" $host (int .Values.ports.s3)) }}
{{- $_ := set $config "admin_listen" (printf "0.0.0.0:%d" (int .Values.ports.admin)) }}
{{- toYaml $config }}
{{- end }}

{{- define "shardcache.cachePath" -}}
{{- $disk := .Values.config.cache.disk | default dict }}
{{- required "config.cache.disk.path is needed to mount the cache volume" $disk.path }}
{{- end }}

{{/*
The shardcache container. In sidecar mode it is a native sidecar: an init container with
restartPolicy: Always, started (and ready) before the pod's containers and stopped after them,
so a Job still completes.
*/}}
{{- define "shardcache.container" -}}
- name: shardcache
  image: {{ include "shardcache.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if eq .Values.mode "sidecar" }}
  restartPolicy: Always
  {{- end }}
  args: ["--log-format", {{ .Values.logs.format | default "json" | quote }}, "serve", "--config", "/etc/shardcache/shardcache.yaml"]
  env:
    - name: SHARDCACHE_LOG
      value: {{ .Values.logs.level | default "info" | quote }}
  {{- with .Values.credentials.existingSecret }}
  envFrom:
    - secretRef:
        name: {{ . }}
  {{- end }}
  ports:
    - name: s3
      containerPort: {{ .Values.ports.s3 }}
      protocol: TCP
      {{- if and (eq .Values.mode "daemonset") .Values.daemonset.hostPort }}
      hostPort: {{ .Values.daemonset.hostPort }}
      {{- end }}
    - name: admin
      containerPort: {{ .Values.ports.admin }}
      protocol: TCP
  startupProbe:
    httpGet:
      path: /readyz
      port: admin
    periodSeconds: 1
    failureThreshold: 120
  readinessProbe:
    httpGet:
      path: /readyz
      port: admin
    periodSeconds: 5
  livenessProbe:
    httpGet:
      path: /healthz
      port: admin
    periodSeconds: 10
    failureThreshold: 3
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: shardcache-config
      mountPath: /etc/shardcache
      readOnly: true
    - name: shardcache-cache
      mountPath: {{ include "shardcache.cachePath" . }}
{{- end }}

{{/*
Pods' volumes: the config and the cache.
*/}}
{{- define "shardcache.volumes" -}}
- name: shardcache-config
  configMap:
    name: {{ include "shardcache.fullname" . }}-config
- name: shardcache-cache
{{- if .Values.cacheVolume }}
  {{- toYaml .Values.cacheVolume | nindent 2 }}
{{- else if eq .Values.mode "daemonset" }}
  hostPath:
    path: /var/lib/shardcache
    type: DirectoryOrCreate
{{- else }}
  emptyDir: {}
{{- end }}
{{- end }}

{{/*
For a training pod: `initContainers:` entries (shardcache as a native sidecar) and `volumes:`
entries. Usage in the pod spec of a chart that depends on this one:
  initContainers:
    {{- include "shardcache.sidecar" (dict "Values" .Values.shardcache "Release" .Release) | nindent 4 }}
  volumes:
    {{- include "shardcache.sidecarVolumes" (dict "Values" .Values.shardcache "Release" .Release) | nindent 4 }}
*/}}
{{- define "shardcache.sidecar" -}}
{{- if ne .Values.mode "sidecar" }}
{{- fail "shardcache.sidecar needs mode: sidecar (the listener binds to localhost)" }}
{{- end }}
{{- include "shardcache.container" . }}
{{- end }}

{{- define "shardcache.sidecarVolumes" -}}
{{- include "shardcache.volumes" . }}
{{- end }}
