"""Which images may run, and which may receive the platform's credentials (pure).

Whoever may create a TrainingJob or InferenceService names its image. The operator
must not be the deputy that hands that image what its author could not get otherwise:
the platform's S3 credentials (MLPLANE_S3_SECRET) go only to pods running the runtime
image the platform configured, and MLPLANE_ALLOWED_IMAGES bounds which images run at all.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from mlplane_operator.settings import OperatorSettings


def effective_image(image: str | None, settings: OperatorSettings) -> str:
    return image or settings.runtime_image


def image_refusal(image: str | None, settings: OperatorSettings) -> str | None:
    """Why spec.image may not run, naming the field and what is allowed; None if it may."""
    effective = effective_image(image, settings)
    patterns = settings.allowed_images
    if not patterns or effective == settings.runtime_image:
        return None
    if any(fnmatchcase(effective, pattern) for pattern in patterns):
        return None
    return (
        f"spec.image {effective!r} is not allowed by the operator's MLPLANE_ALLOWED_IMAGES; "
        f"allowed: {', '.join(patterns)} (or no spec.image: {settings.runtime_image})"
    )


def serving_credentials_refusal(
    image: str | None, uses_s3: bool, version_secret: str | None, settings: OperatorSettings
) -> str | None:
    """Why an image of an InferenceService's own could not read an s3:// version."""
    if not uses_s3 or effective_image(image, settings) == settings.runtime_image:
        return None
    if not (version_secret or settings.s3_secret):
        return None  # no credentials anywhere: the bucket must be readable without
    whose = (
        "the ModelVersion's spec.s3CredentialsSecret"
        if version_secret
        else ("the platform's S3 credentials (MLPLANE_S3_SECRET)")
    )
    return (
        f"spec.image {effective_image(image, settings)!r} does not receive {whose}, only "
        f"the runtime image {settings.runtime_image} does; use the runtime image (no "
        "spec.image) to serve an s3:// version"
    )


def credentials_refusal(
    image: str | None, uses_s3: bool, own_secret: str | None, settings: OperatorSettings
) -> str | None:
    """Why a pod could not read its s3:// data: it names an image of its own, has no
    credentials of its own, and the platform's are not given to other images."""
    if not uses_s3 or own_secret or not settings.s3_secret:
        return None
    if settings.s3_secret_for(image) is not None:
        return None
    return (
        f"spec.image {effective_image(image, settings)!r} does not receive the platform's "
        f"S3 credentials (MLPLANE_S3_SECRET), only the runtime image "
        f"{settings.runtime_image} does; use the runtime image (no spec.image) for s3:// "
        "storage"
    )
