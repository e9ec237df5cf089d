"""Storage URIs: read an object, publish a directory of artifacts atomically.

Supported schemes:

- local paths and ``file://`` URIs;
- ``pvc://claim/path``: the claim is mounted at ``<MLPLANE_PVC_ROOT>/<claim>`` (default
  root ``/mnt/pvc``), so the object is read from the file system;
- ``s3://bucket/key``: boto3, endpoint from ``AWS_ENDPOINT_URL`` (MinIO works),
  region and credentials from the standard AWS variables;
- ``http://`` and ``https://`` (read only).

Missing objects are user errors; unreachable storage is transient.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlplane_runtime.errors import RuntimeFailure, TransientError, UserError

DEFAULT_PVC_ROOT = "/mnt/pvc"
HTTP_TIMEOUT_SECONDS = 60
DEFAULT_HTTP_MAX_BYTES = 1 << 30  # an http(s):// object read whole into memory
CLAIM_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class Location:
    """A parsed storage URI: either a local `path`, an S3 `bucket`/`key`, or a `url`."""

    uri: str
    scheme: str  # "file" | "s3" | "http"
    path: Path | None = None
    bucket: str = ""
    key: str = ""

    def child(self, *parts: str) -> Location:
        """The location of `parts` below this one."""
        suffix = "/".join(p.strip("/") for p in parts)
        uri = f"{self.uri.rstrip('/')}/{suffix}"
        if self.scheme == "file":
            assert self.path is not None
            return Location(uri, "file", path=self.path.joinpath(*parts))
        if self.scheme == "s3":
            key = f"{self.key.rstrip('/')}/{suffix}".lstrip("/")
            return Location(uri, "s3", bucket=self.bucket, key=key)
        return Location(uri, "http")


def pvc_root() -> Path:
    return Path(os.environ.get("MLPLANE_PVC_ROOT", DEFAULT_PVC_ROOT))


def parse_uri(uri: str) -> Location:
    """Parse a storage URI; raise UserError naming the allowed schemes when unsupported."""
    if not uri:
        raise UserError("empty storage URI")
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):
        return Location(uri, "file", path=Path(uri))
    if scheme == "file":
        return Location(uri, "file", path=Path(urllib.parse.unquote(parsed.path)))
    if scheme == "pvc":
        claim, rest = parsed.netloc, parsed.path.lstrip("/")
        if not CLAIM_NAME.match(claim):
            raise UserError(
                f"{uri!r}: a pvc:// URI needs a claim name (a DNS-1123 label): pvc://<claim>/<path>"
            )
        if {".", ".."} & set(rest.split("/")):
            raise UserError(f"{uri!r}: '.' and '..' segments are not allowed in a pvc:// path")
        return Location(uri, "file", path=pvc_root() / claim / rest)
    if scheme == "s3":
        if not parsed.netloc:
            raise UserError(f"{uri!r}: an s3:// URI needs a bucket: s3://<bucket>/<key>")
        return Location(uri, "s3", bucket=parsed.netloc, key=parsed.path.lstrip("/"))
    if scheme in ("http", "https"):
        return Location(uri, "http")
    raise UserError(
        f"{uri!r}: unsupported URI scheme {scheme!r}; "
        "allowed: a local path, file://, pvc://, s3://, http://, https://"
    )


def _s3_client() -> Any:
    try:
        import boto3  # noqa: PLC0415 - optional dependency (the s3 extra)
    except ImportError as exc:  # pragma: no cover - depends on the image
        raise UserError("s3:// URIs need boto3 (install mlplane-runtime[s3])") from exc
    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def _s3_error(exc: Exception, location: Location) -> RuntimeFailure:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    if code in ("NoSuchKey", "404", "NoSuchBucket", "NotFound"):
        return UserError(f"{location.uri}: object not found")
    if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return UserError(f"{location.uri}: access denied ({code})")
    return TransientError(f"{location.uri}: storage unreachable: {exc}")


def read_bytes(uri: str) -> bytes:
    """Read the whole object at `uri`."""
    location = parse_uri(uri)
    if location.scheme == "file":
        assert location.path is not None
        try:
            return location.path.read_bytes()
        except FileNotFoundError as exc:
            raise UserError(f"{uri}: no such file ({location.path})") from exc
        except IsADirectoryError as exc:
            raise UserError(f"{uri}: is a directory, expected a file") from exc
        except PermissionError as exc:
            raise UserError(f"{uri}: permission denied ({location.path})") from exc
        except OSError as exc:
            raise TransientError(f"{uri}: cannot read {location.path}: {exc}") from exc
    if location.scheme == "s3":
        client = _s3_client()
        try:
            body = client.get_object(Bucket=location.bucket, Key=location.key)["Body"]
            return bytes(body.read())
        except Exception as exc:
            raise _s3_error(exc, location) from exc
    limit = http_max_bytes()
    try:
        with _NO_REDIRECTS.open(uri, timeout=HTTP_TIMEOUT_SECONDS) as response:
            data = bytes(response.read(limit + 1))
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            raise UserError(
                f"{uri}: HTTP {exc.code} redirects to {exc.headers.get('Location')!r}; "
                "redirects are not followed: use the final URL"
            ) from exc
        if 400 <= exc.code < 500 and exc.code not in (408, 429):
            raise UserError(f"{uri}: HTTP {exc.code} {exc.reason}") from exc
        raise TransientError(f"{uri}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise TransientError(f"{uri}: unreachable: {exc}") from exc
    if len(data) > limit:
        raise UserError(
            f"{uri}: larger than {limit} bytes (MLPLANE_HTTP_MAX_BYTES); "
            "use pvc:// or s3:// for data this large"
        )
    return data


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could send the trainer (with whatever network access its pod has)
    anywhere, e.g. to a metadata endpoint: answer it as the error it is."""

    def redirect_request(self, *_: Any, **__: Any) -> None:
        return None


_NO_REDIRECTS = urllib.request.build_opener(_RefuseRedirects)


def http_max_bytes() -> int:
    value = os.environ.get("MLPLANE_HTTP_MAX_BYTES", "")
    return int(value) if value.isdigit() else DEFAULT_HTTP_MAX_BYTES


class AlreadyPublishedError(UserError):
    """The target of a publish holds a complete set already: it is never replaced."""


def is_published(target_uri: str, commit_file: str) -> bool:
    """Whether a complete set of files was published at `target_uri`."""
    location = parse_uri(target_uri)
    if location.scheme == "file":
        assert location.path is not None
        return location.path.exists()  # it appears only by an atomic rename
    if location.scheme == "s3":
        client = _s3_client()
        try:
            client.head_object(Bucket=location.bucket, Key=location.child(commit_file).key)
        except Exception as exc:
            error = _s3_error(exc, location.child(commit_file))
            if isinstance(error, UserError) and "not found" in str(error):
                return False
            raise error from exc
        return True
    return False


def publish_directory(target_uri: str, files: dict[str, bytes], commit_file: str) -> None:
    """Write `files` under `target_uri` so that no half-written set is ever visible, and
    never over a set published before (raises AlreadyPublishedError): the artifacts of
    a registered version must keep their sha256 for as long as anything serves them.

    On a file system the files go to a hidden sibling directory that is renamed into
    place; the rename fails when the target exists, so of two writers only one wins. On
    S3, each PUT is atomic and `commit_file` is written last: readers treat the run as
    complete only once it exists, and a target whose `commit_file` exists is refused
    (checked before the first PUT: S3 has no rename, so two writers of one target at the
    same moment are not excluded; the operator never starts two runs with one id).
    """
    location = parse_uri(target_uri)
    if location.scheme == "http":
        raise UserError(f"{target_uri}: cannot write to http(s) storage; use pvc://, s3://")
    if is_published(target_uri, commit_file):
        raise AlreadyPublishedError(f"{target_uri}: artifacts exist already; refusing to replace")
    if location.scheme == "s3":
        client = _s3_client()
        ordered = sorted(files, key=lambda name: name == commit_file)
        try:
            for name in ordered:
                key = location.child(name).key
                client.put_object(Bucket=location.bucket, Key=key, Body=files[name])
        except Exception as exc:
            raise _s3_error(exc, location.child(name)) from exc
        return
    assert location.path is not None
    final = location.path
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    except OSError as exc:
        raise TransientError(f"{target_uri}: cannot create {final.parent}: {exc}") from exc
    try:
        for name, data in files.items():
            with open(staging / name, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(staging, 0o755)
        os.rename(staging, final)  # fails when `final` exists (ENOTEMPTY, EEXIST)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if final.exists():
            raise AlreadyPublishedError(
                f"{target_uri}: artifacts exist already; refusing to replace"
            ) from exc
        raise TransientError(f"{target_uri}: cannot write artifacts: {exc}") from exc


def write_object(uri: str, data: bytes) -> None:
    """Write one object whole, never half-visible: on a file system a hidden temporary
    file renamed into place, on S3 one PUT. An existing object is replaced (callers
    give every object a unique name)."""
    location = parse_uri(uri)
    if location.scheme == "http":
        raise UserError(f"{uri}: cannot write to http(s) storage; use pvc://, s3://")
    if location.scheme == "s3":
        try:
            _s3_client().put_object(Bucket=location.bucket, Key=location.key, Body=data)
        except Exception as exc:
            raise _s3_error(exc, location) from exc
        return
    assert location.path is not None
    path = location.path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, staging = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(staging, 0o644)
        os.replace(staging, path)
    except OSError as exc:
        raise TransientError(f"{uri}: cannot write {path}: {exc}") from exc


def list_objects(prefix_uri: str) -> list[str]:
    """The URIs of the objects below `prefix_uri` (recursively, sorted); hidden files
    (a write in progress) are left out. A missing prefix holds nothing."""
    location = parse_uri(prefix_uri)
    if location.scheme == "http":
        raise UserError(f"{prefix_uri}: cannot list http(s) storage; use pvc://, s3://")
    base = prefix_uri.rstrip("/")
    if location.scheme == "s3":
        client = _s3_client()
        prefix = location.key.rstrip("/") + "/" if location.key else ""
        found: list[str] = []
        try:
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=location.bucket, Prefix=prefix
            ):
                for item in page.get("Contents") or []:
                    relative = item["Key"][len(prefix) :]
                    if not relative.rsplit("/", 1)[-1].startswith("."):
                        found.append(f"{base}/{relative}")
        except Exception as exc:
            raise _s3_error(exc, location) from exc
        return sorted(found)
    assert location.path is not None
    root = location.path
    try:
        files = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise TransientError(f"{prefix_uri}: cannot list {root}: {exc}") from exc
    return sorted(f"{base}/{p.relative_to(root).as_posix()}" for p in files)
