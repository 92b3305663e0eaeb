{{/*
Names are fixed per namespace ("kb-platform-<component>"): the Dagster subchart's values name the
settings ConfigMap and the service account, and cannot template them. One install a namespace.
*/}}
{{- define "kb.name" -}}kb-platform{{- end -}}

{{- define "kb.labels" -}}
app.kubernetes.io/part-of: kb-platform
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* selector labels of one component: include "kb.selector" (list $ "rag") */}}
{{- define "kb.selector" -}}
app.kubernetes.io/name: {{ include "kb.name" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* the image of a component: include "kb.image" (list $ "platform") */}}
{{- define "kb.image" -}}
{{- $ := index . 0 -}}
{{- $name := index $.Values.image.names (index . 1) -}}
{{ $.Values.image.registry }}/{{ $name }}:{{ $.Values.image.tag | default $.Chart.AppVersion }}
{{- end -}}

{{/* A container's security context: non-root, read-only root filesystem, no privileges. */}}
{{- define "kb.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "kb.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The probe of a path on the "http" port: include "kb.probe" .Values.probes.readiness */}}
{{- define "kb.probe" -}}
httpGet:
  path: {{ .path }}
  port: http
periodSeconds: {{ .periodSeconds }}
timeoutSeconds: {{ .timeoutSeconds }}
failureThreshold: {{ .failureThreshold }}
{{- end -}}

{{/*
The model store as a pod volume: the shared PVC, or (modelStore.servingSnapshot set) a gp3
volume of the pod's own restored from that VolumeSnapshot, deleted with the pod.
*/}}
{{- define "kb.modelStoreVolume" -}}
{{- $m := .Values.modelStore -}}
{{- if $m.enabled -}}
- name: model-store
{{- if $m.servingSnapshot }}
  ephemeral:
    volumeClaimTemplate:
      metadata:
        labels:
          {{- include "kb.labels" . | nindent 10 }}
      spec:
        accessModes: [ReadWriteOnce]
        storageClassName: {{ $m.storageClass }}
        resources:
          requests:
            storage: {{ $m.size }}
        dataSource:
          apiGroup: snapshot.storage.k8s.io
          kind: VolumeSnapshot
          name: {{ $m.servingSnapshot }}
{{- else }}
  persistentVolumeClaim:
    claimName: {{ include "kb.name" . }}-model-store
    readOnly: true
{{- end }}
{{- end -}}
{{- end -}}

{{/* Network policy peers: this namespace's pods by component, other namespaces by name, CIDRs; TCP ports. */}}
{{- define "kb.peer.component" -}}
podSelector:
  matchLabels:
    app.kubernetes.io/name: kb-platform
    app.kubernetes.io/component: {{ . }}
{{- end -}}
{{- define "kb.peer.namespace" -}}
namespaceSelector:
  matchLabels:
    kubernetes.io/metadata.name: {{ . }}
{{- end -}}
{{- define "kb.peer.cidrs" -}}
{{- range . }}
- ipBlock: {cidr: {{ . }}}
{{- end }}
{{- end -}}
{{- define "kb.ports" -}}
{{- range . }}
- {protocol: TCP, port: {{ . }}}
{{- end }}
{{- end -}}
