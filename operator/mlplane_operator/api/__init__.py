"""The mlplane API: pydantic models per version, the single source of truth for the CRDs.

`v1alpha1` holds the kinds; `crdgen` writes `crds/` from them (`make crds`).
"""
