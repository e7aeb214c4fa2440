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
{{- $auth := include "shardcache.auth" . | fromYaml }}
{{- if $auth }}
{{- $_ := set $config "auth" $auth }}
{{- end }}
{{- with .Values.tls.existingSecret }}
{{- $_ := set $config "tls" (dict "cert_file" "/etc/shardcache-tls/tls.crt" "key_file" "/etc/shardcache-tls/tls.key" "admin" $.Values.tls.admin) }}
{{- end }}
{{- if include "shardcache.diskEncrypted" . }}
{{- $_ := set $config.cache.disk "key_file" "/etc/shardcache-disk-key/shardcache-disk.key" }}
{{- end }}
{{- if include "shardcache.cluster" . }}
{{- $peers := printf "%s-peers" (include "shardcache.fullname" .) }}
{{- $cluster := dict "node" "${NODE_NAME}" "listen" (printf "0.0.0.0:%d" (int .Values.cluster.port)) "secret_file" "/etc/shardcache-cluster/secret" "peer_chunks" .Values.cluster.peerChunks }}
{{- if eq .Values.cluster.discovery "dns" }}
{{- $_ := set $cluster "dns" (dict "name" (printf "%s.%s.svc.cluster.local" $peers .Release.Namespace) "refresh_seconds" (int .Values.cluster.refreshSeconds)) }}
{{- else }}
{{- $_ := set $cluster "kubernetes" (dict "service" $peers "port" "peer") }}
{{- end }}
{{- with .Values.cluster.zone }}
{{- $_ := set $cluster "zone" . }}
{{- end }}
{{- $_ := set $config "cluster" $cluster }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
"true" in cluster mode; empty otherwise. Cluster mode needs daemonset mode.
*/}}
{{- define "shardcache.cluster" -}}
{{- if .Values.cluster.enabled }}
{{- if ne .Values.mode "daemonset" }}
{{- fail "cluster.enabled needs mode: daemonset (a sidecar's cache is its pod's own)" }}
{{- end }}true
{{- end }}
{{- end }}

{{/*
The Secret holding the cluster secret: cluster.existingSecret, or the chart's own.
*/}}
{{- define "shardcache.clusterSecret" -}}
{{- .Values.cluster.existingSecret | default (printf "%s-cluster" (include "shardcache.fullname" .)) }}
{{- end }}

{{/*
"true" when the disk tier is on and encrypted (the default); empty otherwise.
*/}}
{{- define "shardcache.diskEncrypted" -}}
{{- $disk := (.Values.config.cache | default dict).disk }}
{{- if and $disk (ne (toString ($disk.encryption | default "aes-256-gcm")) "none") }}true{{ end }}
{{- end }}

{{/*
The Secret holding the disk tier's master keys: diskEncryption.existingSecret, or the chart's own.
*/}}
{{- define "shardcache.diskKeySecret" -}}
{{- .Values.diskEncryption.existingSecret | default (printf "%s-disk-key" (include "shardcache.fullname" .)) }}
{{- end }}

{{/*
The `auth` section: config.auth, with the region and the files of the Secrets. Empty (no client
authentication) only in sidecar mode with allowAnonymousSidecar and nothing else given.
*/}}
{{- define "shardcache.auth" -}}
{{- $auth := deepCopy (.Values.config.auth | default dict) }}
{{- $given := or .Values.config.auth .Values.auth.existingSecret .Values.auth.adminTokenSecret }}
{{- if and (eq .Values.mode "sidecar") .Values.auth.allowAnonymousSidecar (not $given) }}
{{- else }}
{{- if not (hasKey $auth "region") }}
{{- $_ := set $auth "region" .Values.auth.region }}
{{- end }}
{{- if .Values.auth.existingSecret }}
{{- $_ := set $auth "file" "/etc/shardcache-auth/auth.yaml" }}
{{- end }}
{{- if .Values.auth.adminTokenSecret }}
{{- $_ := set $auth "admin_token_file" "/etc/shardcache-admin/token" }}
{{- end }}
{{- toYaml $auth }}
{{- end }}
{{- end }}

{{/*
The scheme of the admin listener, for probes and monitors.
*/}}
{{- define "shardcache.adminScheme" -}}
{{- ternary "HTTPS" "HTTP" (and (not (empty .Values.tls.existingSecret)) .Values.tls.admin) }}
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
    {{- if include "shardcache.cluster" . }}
    # The member id: the node's name, stable across pod restarts.
    - name: NODE_NAME
      valueFrom:
        fieldRef:
          fieldPath: spec.nodeName
    {{- end }}
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
    {{- if include "shardcache.cluster" . }}
    - name: peer
      containerPort: {{ .Values.cluster.port }}
      protocol: TCP
    {{- end }}
  startupProbe:
    httpGet:
      path: /readyz
      port: admin
      {{- if eq (include "shardcache.adminScheme" .) "HTTPS" }}
      scheme: HTTPS
      {{- end }}
    periodSeconds: 1
    failureThreshold: 120
  readinessProbe:
    httpGet:
      path: /readyz
      port: admin
      {{- if eq (include "shardcache.adminScheme" .) "HTTPS" }}
      scheme: HTTPS
      {{- end }}
    periodSeconds: 5
  livenessProbe:
    httpGet:
      path: /healthz
      port: admin
      {{- if eq (include "shardcache.adminScheme" .) "HTTPS" }}
      scheme: HTTPS
      {{- end }}
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
    {{- if .Values.auth.existingSecret }}
    - name: shardcache-auth
      mountPath: /etc/shardcache-auth
      readOnly: true
    {{- end }}
    {{- if .Values.auth.adminTokenSecret }}
    - name: shardcache-admin-token
      mountPath: /etc/shardcache-admin
      readOnly: true
    {{- end }}
    {{- if .Values.tls.existingSecret }}
    - name: shardcache-tls
      mountPath: /etc/shardcache-tls
      readOnly: true
    {{- end }}
    {{- if include "shardcache.diskEncrypted" . }}
    - name: shardcache-disk-key
      mountPath: /etc/shardcache-disk-key
      readOnly: true
    {{- end }}
    {{- if include "shardcache.cluster" . }}
    - name: shardcache-cluster
      mountPath: /etc/shardcache-cluster
      readOnly: true
    {{- end }}
{{- end }}

{{/*
Pods' volumes: the config, the cache, and the Secrets auth and tls name.
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
{{- with .Values.auth.existingSecret }}
- name: shardcache-auth
  secret:
    secretName: {{ . }}
    items:
      - key: auth.yaml
        path: auth.yaml
{{- end }}
{{- with .Values.auth.adminTokenSecret }}
- name: shardcache-admin-token
  secret:
    secretName: {{ . }}
    items:
      - key: token
        path: token
{{- end }}
{{- with .Values.tls.existingSecret }}
- name: shardcache-tls
  secret:
    secretName: {{ . }}
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- if include "shardcache.diskEncrypted" . }}
- name: shardcache-disk-key
  secret:
    secretName: {{ include "shardcache.diskKeySecret" . }}
    items:
      - key: shardcache-disk.key
        path: shardcache-disk.key
{{- end }}
{{- if include "shardcache.cluster" . }}
- name: shardcache-cluster
  secret:
    secretName: {{ include "shardcache.clusterSecret" . }}
    items:
      - key: secret
        path: secret
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
