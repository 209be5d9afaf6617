{{/*
Names, labels and the one pod template every Atrium process shares.
*/}}

{{- define "atrium.fullname" -}}
{{- if contains "atrium" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-atrium" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "atrium.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "atrium.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "atrium.labels" -}}
helm.sh/chart: {{ include "atrium.chart" . }}
app.kubernetes.io/name: atrium
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "atrium.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels of one process's objects and pods: dict root, component, partOf, process. */}}
{{- define "atrium.processLabels" -}}
{{ include "atrium.labels" .root }}
app.kubernetes.io/component: {{ .component }}
atrium.dev/part-of: {{ .partOf }}
atrium.dev/process: {{ .process }}
{{- end -}}

{{/* Selector labels of one process (immutable in a Deployment: never the version). */}}
{{- define "atrium.selectorLabels" -}}
app.kubernetes.io/name: atrium
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
atrium.dev/part-of: {{ .partOf }}
atrium.dev/process: {{ .process }}
{{- end -}}

{{- define "atrium.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "atrium.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* A web service's in-cluster DNS name (its Service). */}}
{{- define "atrium.serviceHost" -}}
{{- printf "%s-%s.%s.svc" (include "atrium.fullname" .root) .service .root.Release.Namespace -}}
{{- end -}}

{{/* A web service's in-cluster base URL. */}}
{{- define "atrium.serviceURL" -}}
{{- $port := (index .root.Values.services .service).port -}}
{{- printf "http://%s:%v" (include "atrium.serviceHost" .) $port -}}
{{- end -}}

{{/* A service's public host at the Ingress: the portal at ingress.host, the others at <service>.<host>. */}}
{{- define "atrium.ingressHost" -}}
{{- $ingress := .root.Values.ingress -}}
{{- if hasKey $ingress.hosts .service -}}
{{- index $ingress.hosts .service -}}
{{- else if eq .service "portal" -}}
{{- $ingress.host -}}
{{- else -}}
{{- printf "%s.%s" .service $ingress.host -}}
{{- end -}}
{{- end -}}

{{/* Host names every web process accepts (ALLOWED_HOSTS), comma-separated: the Services' DNS names, the Ingress
hosts. Web pods add their own pod IP (kubelet probes and Prometheus address pods by IP). */}}
{{- define "atrium.allowedHosts" -}}
{{- $root := . -}}
{{- $hosts := list "localhost" -}}
{{- range $service := keys .Values.services | sortAlpha -}}
{{- $name := printf "%s-%s" (include "atrium.fullname" $root) $service -}}
{{- $hosts = append $hosts $name -}}
{{- $hosts = append $hosts (printf "%s.%s" $name $root.Release.Namespace) -}}
{{- $hosts = append $hosts (printf "%s.%s.svc" $name $root.Release.Namespace) -}}
{{- $hosts = append $hosts (printf "%s.%s.svc.cluster.local" $name $root.Release.Namespace) -}}
{{- if $root.Values.ingress.enabled -}}
{{- $hosts = append $hosts (include "atrium.ingressHost" (dict "root" $root "service" $service)) -}}
{{- end -}}
{{- end -}}
{{- join "," $hosts -}}
{{- end -}}

{{/* The ConfigMap's data: the non-secret environment of every Atrium process (config wins). */}}
{{- define "atrium.configData" -}}
{{- $root := . -}}
{{- $data := dict
  "ATRIUM_ENV" "production"
  "ALLOWED_HOSTS" (include "atrium.allowedHosts" .)
  "ATRIUM_VERSION" (include "atrium.imageTag" .)
  "ATRIUM_OUTBOUND_ALLOW_NETWORKS" (join "," .Values.outboundAllowNetworks)
  "SECURE_SSL_REDIRECT" "false"
  "CELERY_TASK_TIME_LIMIT" (toString .Values.celery.taskTimeLimit)
  "CELERY_TASK_SOFT_TIME_LIMIT" (toString .Values.celery.taskSoftTimeLimit)
  "CELERY_VISIBILITY_TIMEOUT" (toString .Values.celery.visibilityTimeout)
  "PYTHONUNBUFFERED" "1"
-}}
{{- range $service, $spec := .Values.services -}}
{{- $_ := set $data (printf "%s_PORT" (upper $service)) (toString $spec.port) -}}
{{- $_ := set $data (printf "%s_URL" (upper $service)) (include "atrium.serviceURL" (dict "root" $root "service" $service)) -}}
{{- end -}}
{{- $portal := include "atrium.serviceURL" (dict "root" $root "service" "portal") -}}
{{- $_ := set $data "ATRIUM_PORTAL_URL" $portal -}}
{{- $_ := set $data "JWT_JWKS_URL" (printf "%s/.well-known/jwks.json" $portal) -}}
{{- $_ := set $data "ATRIUM_TOKEN_URL" (printf "%s/api/v1/auth/token" $portal) -}}
{{- if .Values.ingress.enabled -}}
{{- /* Browsers: the admin sign-in (OpenID Connect) goes to the portal's public HTTPS host, and so does the services'
code-for-token exchange (ATRIUM_SSO_INTERNAL_URL unset: the client secret never crosses the pod network in clear
text; the kit warns, atrium.W010, otherwise); the services' API docs (their own hosts) may call the portal's token
endpoint; logins are throttled by the client's address, behind the Ingress's hops. */ -}}
{{- $_ := set $data "ATRIUM_SSO_URL" (printf "https://%s" (include "atrium.ingressHost" (dict "root" $root "service" "portal"))) -}}
{{- $origins := list -}}
{{- range $service := keys .Values.services | sortAlpha -}}
{{- if ne $service "portal" -}}
{{- $origins = append $origins (printf "https://%s" (include "atrium.ingressHost" (dict "root" $root "service" $service))) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $data "ATRIUM_TOKEN_CORS_ORIGINS" (join "," $origins) -}}
{{- $_ := set $data "ATRIUM_PROXY_COUNT" (toString .Values.ingress.proxyCount) -}}
{{- end -}}
{{- range $key := list "CELERY_TASK_TIME_LIMIT" "CELERY_TASK_SOFT_TIME_LIMIT" "CELERY_VISIBILITY_TIMEOUT" "CELERY_WORKER_CONCURRENCY" -}}
{{- if hasKey $root.Values.config $key -}}
{{- fail (printf "config.%s: set it through celery.* (time limits) or workers.<queue>.concurrency, which the workers' grace periods are checked against" $key) -}}
{{- end -}}
{{- end -}}
{{- range $key, $value := .Values.config -}}
{{- $_ := set $data $key (toString $value) -}}
{{- end -}}
{{- toYaml $data -}}
{{- end -}}

{{/* The pod template of one Atrium process. dict:
  root, component, partOf, process, args (list), resources, web (bool: port + probes), port,
  env (list of EnvVars, optional), grace (terminationGracePeriodSeconds, optional), hook (bool: migration Job). */}}
{{- define "atrium.podTemplate" -}}
{{- $root := .root -}}
{{- $values := $root.Values -}}
metadata:
  labels:
    {{- include "atrium.selectorLabels" . | nindent 4 }}
    app.kubernetes.io/version: {{ include "atrium.imageTag" $root | trunc 63 | trimSuffix "-" | quote }}
    {{- with $values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "atrium.configData" $root | sha256sum }}
    {{- with $values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- if .hook }}
  restartPolicy: Never
  {{- else }}
  serviceAccountName: {{ include "atrium.serviceAccountName" $root }}
  {{- end }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  {{- with .grace }}
  terminationGracePeriodSeconds: {{ . }}
  {{- end }}
  {{- with $values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $values.podSecurityContext | nindent 4 }}
  {{- if and $values.topologySpread (not .hook) }}
  topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: kubernetes.io/hostname
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- include "atrium.selectorLabels" . | nindent 10 }}
  {{- end }}
  {{- with $values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ .process | replace "_" "-" }}
      image: "{{ $values.image.repository }}:{{ include "atrium.imageTag" $root }}"
      imagePullPolicy: {{ $values.image.pullPolicy }}
      args:
        {{- toYaml .args | nindent 8 }}
      envFrom:
        - configMapRef:
            name: {{ .configMap | default (include "atrium.fullname" $root) }}
        - secretRef:
            name: {{ $values.existingSecret }}
      env:
        - name: BIND_HOST
          value: 0.0.0.0
        {{- if .web }}
        - name: POD_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
        # The pod's own address too: kubelet's probes and Prometheus's scrapes name the pod by IP.
        - name: ALLOWED_HOSTS
          value: "$(POD_IP),{{ index (include "atrium.configData" $root | fromYaml) "ALLOWED_HOSTS" }}"
        {{- end }}
        {{- with .env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- if .web }}
      ports:
        - name: http
          containerPort: {{ .port }}
          protocol: TCP
      # Endpoints drop a terminating pod a moment after SIGTERM would reach gunicorn: keep serving meanwhile.
      lifecycle:
        preStop:
          exec: {command: ["python", "-c", "import time; time.sleep({{ $values.preStopSeconds }})"]}
      startupProbe:
        httpGet: {path: /health/live, port: http}
        {{- toYaml $values.probes.startup | nindent 8 }}
      livenessProbe:
        httpGet: {path: /health/live, port: http}
        {{- toYaml $values.probes.liveness | nindent 8 }}
      readinessProbe:
        httpGet: {path: /health/ready, port: http}
        {{- toYaml $values.probes.readiness | nindent 8 }}
      {{- else if not .hook }}
      {{- /* A process without an HTTP port: healthy while its main process (PID 1) runs, neither stopped nor a
      zombie; a task stuck past Celery's hard time limit is killed by Celery itself. */}}
      {{- $alive := list "python" "-c" "import sys; sys.exit(open('/proc/1/stat').read().rsplit(')', 1)[1].split()[0] in 'ZTtX')" }}
      startupProbe:
        exec: {command: {{ toJson $alive }}}
        periodSeconds: 5
        failureThreshold: 24
      livenessProbe:
        exec: {command: {{ toJson $alive }}}
        periodSeconds: 30
        timeoutSeconds: 5
        failureThreshold: 3
      readinessProbe:
        exec: {command: {{ toJson $alive }}}
        periodSeconds: 30
        timeoutSeconds: 5
      {{- end }}
      resources:
        {{- toYaml .resources | nindent 8 }}
      securityContext:
        {{- toYaml $values.securityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ $values.tmpVolume.sizeLimit }}
{{- end -}}
