{{/*
spiffe-broker sidecar for an app's pod. In the app chart's pod template:

  metadata:
    labels:
      {{- include "spiffe-broker-sidecar.podLabels" . | nindent 8 }}
  spec:
    initContainers:
      {{- include "spiffe-broker-sidecar.container" . | nindent 8 }}
    containers:
      - name: app
        env:
          {{- include "spiffe-broker-sidecar.appEnv" . | nindent 12 }}
        volumeMounts:
          {{- include "spiffe-broker-sidecar.appVolumeMounts" . | nindent 12 }}
    volumes:
      {{- include "spiffe-broker-sidecar.volumes" . | nindent 8 }}

Settings: .Values.spiffeBrokerSidecar (each key optional; defaults below). The sidecar is a native sidecar
(an init container with restartPolicy: Always, Kubernetes 1.29+): it starts before the app and stops after it.
The pod also needs an X.509-SVID (a ClusterSPIFFEID that selects it) and a policy rule at the token service.
*/}}

{{- define "spiffe-broker-sidecar.defaults" -}}
image:
  repository: spiffe-broker
  tag: "0.1.0"
  pullPolicy: IfNotPresent
# The token service, and the SPIFFE ID it must present (spiffe://<trust domain>/spiffe-broker).
tokenService: https://spiffe-broker.spiffe-broker.svc:8443
trustDomain: example.org
tokenServiceId: ""
# Where the app finds the token socket (a Memory emptyDir shared by the sidecar and the app).
socketDir: /run/broker
socketName: token.sock
# /v1/token, /v1/status, /healthz and /readyz on 127.0.0.1 only (probes run inside the container).
httpPort: 8081
# Egress proxy for governed API-key exceptions (docs/exceptions.md); 0: off.
egressPort: 0
metrics:
  enabled: true
  port: 9090
csiDriver:
  pluginName: csi.spiffe.io
agentSocketName: spire-agent.sock
extraArgs: []
extraEnv: []
resources:
  requests:
    cpu: 50m
    memory: 64Mi
  limits:
    cpu: 250m
    memory: 192Mi
{{- end }}

{{/* The merged settings, as YAML. */}}
{{- define "spiffe-broker-sidecar.config" -}}
{{- $defaults := include "spiffe-broker-sidecar.defaults" . | fromYaml }}
{{- $given := deepCopy (default (dict) .Values.spiffeBrokerSidecar) }}
{{- toYaml (mergeOverwrite $defaults $given) }}
{{- end }}

{{- define "spiffe-broker-sidecar.podLabels" -}}
spiffe-broker-sidecar: "true"
{{- end }}

{{/* The sidecar, as one item of initContainers. */}}
{{- define "spiffe-broker-sidecar.container" -}}
{{- $c := include "spiffe-broker-sidecar.config" . | fromYaml }}
{{- $probe := printf "import urllib.request; urllib.request.urlopen('http://127.0.0.1:%d/%%s', timeout=2)" (int $c.httpPort) -}}

- name: spiffe-broker-sidecar
  image: {{ printf "%s:%s" $c.image.repository (toString $c.image.tag) }}
  imagePullPolicy: {{ $c.image.pullPolicy }}
  restartPolicy: Always
  args:
    - sidecar
    - --socket
    - {{ printf "%s/%s" $c.socketDir $c.socketName }}
    - --token-service
    - {{ $c.tokenService }}
    - --token-service-id
    - {{ default (printf "spiffe://%s/spiffe-broker" $c.trustDomain) $c.tokenServiceId }}
    - --http-port
    - {{ $c.httpPort | int | quote }}
    {{- if $c.egressPort }}
    - --egress-port
    - {{ $c.egressPort | int | quote }}
    {{- end }}
    {{- range $c.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    - name: SPIFFE_ENDPOINT_SOCKET
      value: {{ printf "unix:///spiffe-workload-api/%s" $c.agentSocketName }}
    {{- if $c.metrics.enabled }}
    - name: SPIFFE_BROKER_METRICS__HOST
      value: 0.0.0.0
    - name: SPIFFE_BROKER_METRICS__PORT
      value: {{ $c.metrics.port | int | quote }}
    {{- end }}
    {{- with $c.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if $c.metrics.enabled }}
  ports:
    - name: metrics
      containerPort: {{ $c.metrics.port | int }}
  {{- end }}
  # The HTTP endpoints listen on 127.0.0.1 only (no token from the pod network); kubelet HTTP probes dial the
  # pod IP, so the probes run inside the container.
  livenessProbe:
    exec:
      command: ["python", "-c", {{ printf $probe "healthz" | quote }}]
    initialDelaySeconds: 5
    periodSeconds: 20
    timeoutSeconds: 5
    failureThreshold: 3
  readinessProbe:
    exec:
      command: ["python", "-c", {{ printf $probe "readyz" | quote }}]
    periodSeconds: 10
    timeoutSeconds: 5
    failureThreshold: 2
  resources:
    {{- toYaml $c.resources | nindent 4 }}
  securityContext:
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    runAsNonRoot: true
    capabilities:
      drop: ["ALL"]
  volumeMounts:
    - name: broker-socket
      mountPath: {{ $c.socketDir }}
    - name: spiffe-workload-api
      mountPath: /spiffe-workload-api
      readOnly: true
    - name: broker-sidecar-tmp
      mountPath: /tmp
{{- end }}

{{/* The app container's environment: the Workload API, so that the app presents the same X.509-SVID (tokens
are bound to it). With egressPort, the app also needs HTTP_PROXY=http://127.0.0.1:<egressPort> and a NO_PROXY for
everything else it calls (docs/exceptions.md): set those in the app container yourself. */}}
{{- define "spiffe-broker-sidecar.appEnv" -}}
{{- $c := include "spiffe-broker-sidecar.config" . | fromYaml -}}

- name: SPIFFE_ENDPOINT_SOCKET
  value: {{ printf "unix:///spiffe-workload-api/%s" $c.agentSocketName }}
{{- end }}

{{/* The app container's volumeMounts. */}}
{{- define "spiffe-broker-sidecar.appVolumeMounts" -}}
{{- $c := include "spiffe-broker-sidecar.config" . | fromYaml -}}

- name: broker-socket
  mountPath: {{ $c.socketDir }}
- name: spiffe-workload-api
  mountPath: /spiffe-workload-api
  readOnly: true
{{- end }}

{{/* The pod's volumes for the sidecar (and the app). */}}
{{- define "spiffe-broker-sidecar.volumes" -}}
{{- $c := include "spiffe-broker-sidecar.config" . | fromYaml -}}

# Shared only by the containers of this pod; the sidecar creates the socket in it.
- name: broker-socket
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
- name: spiffe-workload-api
  csi:
    driver: {{ $c.csiDriver.pluginName }}
    readOnly: true
- name: broker-sidecar-tmp
  emptyDir:
    sizeLimit: 16Mi
{{- end }}
