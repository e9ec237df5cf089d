"""Which images run on the local node, and how: this repository's images map to its venv.

The table must match the Dockerfiles: `mlplane/operator` has ENTRYPOINT
["python", "-m", "mlplane_operator"]; `mlplane/runtime` has no ENTRYPOINT and
CMD ["mlplane-serve"]. Any other image is refused (ErrImagePull / ImagePullBackOff).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LocalImage:
    repository: str
    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str = "/"


_PYTHON_ENV = {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}

# repository suffix -> what the image would run
IMAGES: dict[str, LocalImage] = {
    "mlplane/operator": LocalImage(
        "mlplane/operator", entrypoint=["python", "-m", "mlplane_operator"], cmd=[], env=_PYTHON_ENV
    ),
    "mlplane/runtime": LocalImage(
        "mlplane/runtime", entrypoint=[], cmd=["mlplane-serve"], env=_PYTHON_ENV
    ),
}


class ImageRefused(Exception):
    """The image does not exist on the local node."""


def repository_of(image: str) -> str:
    """`registry:5000/org/name:tag@sha256:...` -> `registry:5000/org/name`."""
    name = image.split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name = name[:colon]
    return name


def resolve(image: str) -> LocalImage:
    repository = repository_of(image)
    for suffix, local in IMAGES.items():
        if repository == suffix or repository.endswith("/" + suffix):
            return local
    known = ", ".join(f"[registry/]{suffix}" for suffix in IMAGES)
    raise ImageRefused(
        f'image "{image}" is not available: only this repository\'s images ({known}) '
        "run on the local node"
    )


def image_id(image: str, venv: str) -> str:
    return f"local://{repository_of(image)}@{venv}"
