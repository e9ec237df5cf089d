#!/usr/bin/env python3
"""A dynamic provisioner of `local` PersistentVolumes for the local cluster (dev tooling).

The default StorageClass names this provisioner. For each claim the PV controller hands
to it (annotation volume.kubernetes.io/storage-provisioner), it makes a directory under
--volumes-dir and a `local` PersistentVolume bound to the claim, with node affinity to
the one node. It is a `local` volume rather than a `hostPath` one because the kubelet
applies a pod's fsGroup to local volumes, so non-root pods can write to their claims, as
they can on a cloud disk. A Released volume with reclaim policy Delete is removed, its
directory too. It polls the API server (once a second) as the cluster admin.

On a real cluster the cloud's CSI driver (or rancher's local-path-provisioner) does this.
"""

from __future__ import annotations

import argparse
import json
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
PROVISIONER_ANNOTATIONS = (
    "volume.kubernetes.io/storage-provisioner",
    "volume.beta.kubernetes.io/storage-provisioner",
)


class Api:
    def __init__(self, state: Path, port: int) -> None:
        pki = state / "pki"
        self.context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self.base = f"https://127.0.0.1:{port}"

    def call(self, method: str, path: str, body: Obj | None = None) -> tuple[int, Obj]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=10) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, {}


def log(message: str) -> None:
    print(f"[local-provisioner] {message}", file=sys.stderr, flush=True)


def volume_for(claim: Obj, class_name: str, node: str, path: Path, provisioner: str) -> Obj:
    meta, spec = claim["metadata"], claim["spec"]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": f"pvc-{meta['uid']}",
            "annotations": {"pv.kubernetes.io/provisioned-by": provisioner},
        },
        "spec": {
            "capacity": {"storage": spec["resources"]["requests"]["storage"]},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "volumeMode": spec.get("volumeMode", "Filesystem"),
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": class_name,
            "claimRef": {
                "kind": "PersistentVolumeClaim",
                "apiVersion": "v1",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "local": {"path": str(path)},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": [node],
                                }
                            ]
                        }
                    ]
                }
            },
        },
    }


def provision(api: Api, args: argparse.Namespace) -> None:
    status, classes = api.call("GET", "/apis/storage.k8s.io/v1/storageclasses")
    if status != 200:
        return
    ours = {c["metadata"]["name"] for c in classes["items"] if c["provisioner"] == args.provisioner}
    status, claims = api.call("GET", "/api/v1/persistentvolumeclaims")
    if status != 200:
        return
    for claim in claims["items"]:
        annotations = claim["metadata"].get("annotations") or {}
        wanted = any(annotations.get(key) == args.provisioner for key in PROVISIONER_ANNOTATIONS)
        class_name = claim["spec"].get("storageClassName")
        if not wanted or class_name not in ours or claim["spec"].get("volumeName"):
            continue
        path = args.volumes_dir / f"pvc-{claim['metadata']['uid']}"
        volume = volume_for(claim, class_name, args.node_name, path, args.provisioner)
        path.mkdir(parents=True, exist_ok=True)
        status, _ = api.call("POST", "/api/v1/persistentvolumes", volume)
        if status == 201:
            meta = claim["metadata"]
            log(f"provisioned {volume['metadata']['name']} for {meta['namespace']}/{meta['name']}")


def reclaim(api: Api, args: argparse.Namespace) -> None:
    status, volumes = api.call("GET", "/api/v1/persistentvolumes")
    if status != 200:
        return
    for volume in volumes["items"]:
        meta, spec = volume["metadata"], volume["spec"]
        ours = (meta.get("annotations") or {}).get("pv.kubernetes.io/provisioned-by")
        released = volume.get("status", {}).get("phase") in ("Released", "Failed")
        if ours != args.provisioner or not released:
            continue
        if spec.get("persistentVolumeReclaimPolicy") != "Delete":
            continue
        path = Path(spec["local"]["path"])
        if path.parent == args.volumes_dir:
            shutil.rmtree(path, ignore_errors=True)
        status, _ = api.call("DELETE", f"/api/v1/persistentvolumes/{meta['name']}")
        if status in (200, 202):
            log(f"deleted {meta['name']} (released)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig-dir", type=Path, required=True, help="the cluster state")
    parser.add_argument("--volumes-dir", type=Path, required=True)
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--provisioner", required=True)
    parser.add_argument("--api-port", type=int, required=True)
    args = parser.parse_args()
    args.volumes_dir = args.volumes_dir.resolve()
    args.volumes_dir.mkdir(parents=True, exist_ok=True)
    api = Api(args.kubeconfig_dir, args.api_port)
    log(f"provisioning {args.provisioner} volumes under {args.volumes_dir}")
    while True:
        try:
            provision(api, args)
            reclaim(api, args)
        except (OSError, ValueError, KeyError) as error:
            log(f"pass failed, retrying: {error!r}")
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
