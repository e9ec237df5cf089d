{{/*
RBAC rules, written once and used by the ClusterRole (all namespaces) or by the Role in
each watched namespace. No wildcards: every resource and verb is named with the reason.
*/}}

{{/* Rules on namespaced resources: what the operator reconciles and creates. */}}
{{- define "mlplane.rbac.namespacedRules" -}}
# The three kinds: Kopf watches them and patches its finalizer and progress
# annotations; the operator updates spec.stage when a promotion archives a version.
- apiGroups: [mlplane.io]
  resources: [trainingjobs, modelversions, inferenceservices]
  verbs: [get, list, watch, patch, update]
# A successful training run registers a ModelVersion. Versions are never deleted by the
# operator (they are the registry); people or GitOps delete them.
- apiGroups: [mlplane.io]
  resources: [modelversions]
  verbs: [create]
# Conditions, observedGeneration, run and rollout history live in the status subresource.
- apiGroups: [mlplane.io]
  resources: [trainingjobs/status, modelversions/status, inferenceservices/status]
  verbs: [get, patch, update]
# Children are adopted with blockOwnerDeletion=true (kopf.adopt); clusters that enable
# the OwnerReferencesPermissionEnforcement admission plugin require update on the
# owner's finalizers subresource for that.
- apiGroups: [mlplane.io]
  resources: [trainingjobs/finalizers, modelversions/finalizers, inferenceservices/finalizers]
  verbs: [update]
# Version numbers are never reused: per model, a ConfigMap mlplane-versions-<model>
# keeps the highest number given, written with resourceVersion preconditions (update,
# not patch). Never deleted by the operator (deleting a version must not free its number).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, update]
# Training and artifact-verification runs are Jobs; a new run replaces a finished one
# (delete) and suspend/resume is a patch.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete, patch]
# Read-only: the trainer's result comes back in its container's termination message,
# readiness and the pod IPs of serving pods (the operator scrapes the monitor sidecar
# and the server's /metrics at the pod IP, so no pods/proxy and no exec).
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
# Serving: one Deployment per InferenceService, two during a canary (the stable one is
# deleted when a rollout completes or rolls back).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, update, delete]
# One Service per InferenceService in front of stable and canary pods. Deleted by the
# garbage collector with its owner, so no delete.
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, update]
# Serving is Ready only when the InferenceService's Service has a ready endpoint: the
# operator watches the EndpointSlices of its Services (into its cache; they carry the
# Service's mlplane.io/inferenceservice label) and reads kubernetes.io/service-name=<name>.
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
# The default artifacts claim (storage.uri pvc://...), created once per namespace when
# storage.pvc.create is on; never listed, changed or deleted (it holds the models).
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, create]
# InferenceService spec.autoscaling becomes an HPA; removing autoscaling deletes it.
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, update, delete]
# Events for `kubectl describe`: Kopf posts core/v1 Events, the operator's own
# transitions may use events.k8s.io/v1; patch updates the count of a repeated event.
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- if .Values.serviceMonitors }}
# serviceMonitors=true: a ServiceMonitor per InferenceService that asks for one.
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors]
  verbs: [get, list, watch, create, patch, delete]
{{- end }}
{{- end -}}

{{/* Cluster-scoped reads Kopf needs in either mode. */}}
{{- define "mlplane.rbac.clusterReadRules" -}}
# Kopf discovers the served resources and watches CRDs so that it notices the mlplane.io
# (and kopf.dev) CRDs being installed, upgraded or removed while it runs.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [get, list, watch]
{{- end -}}
