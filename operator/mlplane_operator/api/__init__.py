"""The mlplane API: pydantic models per version, the single source of truth for the CRDs.

`v1alpha1` holds the kinds, one module each; `crdgen` writes `crds/` from them
(`make crds`; `--check` compares instead). Parse an object with
`TrainingJob.from_body(body)` (or `model_validate`), build a status patch with
`TrainingJobStatus(...).to_json()`.

Decisions a reader may look for:

- Every cross-field rule is a `base.Rule`: the CEL expression the API server enforces
  and its Python twin, side by side, so the operator rejects what admission rejects.
  Messages start with the field path (`spec.dataset.target ...`); `fieldPath` points the
  API server's error at the offending field.
- Optional fields are not `nullable`: the API server prunes a null, so `field: null`
  means unset, as None does in Python (see `structural`).
- Objects with defaulted fields (`validation`, `registration`, `runPolicy`, `rollout`)
  default to `{}` in the schema and to the same model in Python, so a parsed manifest
  equals what the API server stores. Defaults that depend on other fields (replicas
  without autoscaling, the dataset format with a uri, Production when neither version
  nor stage is set) are not schema defaults, since a default would break the
  "one of" rules; the models expose them as `effective_*` properties.
- Short names: `tj`, `mv` and `mlisvc` (KServe owns `isvc`; with both installed,
  `kubectl get inferenceservices` needs `inferenceservices.mlplane.io`). All three are in
  the `mlplane` category: `kubectl get mlplane`.
- ModelVersion: everything in `spec` but `stage` is immutable (transition rules), and the
  object must be named `<model>-v<version>`, which makes a version unique per namespace.
  TrainingJob names are at most 52 characters (they prefix run Jobs); InferenceService
  names are DNS-1035 labels of at most 50 (they name a Service and its Deployments).
"""
