"""Error kinds shared by the runtimes and the process exit codes they map to.

Exit codes (all three console scripts):

- 0 ``EXIT_OK``: success.
- 1 ``EXIT_INTERNAL``: a bug; the message says where.
- 2 ``EXIT_USER``: a user error that retrying cannot fix (bad spec, bad data, unsupported
  estimator, parity failure, artifact verification failed).
- 3 ``EXIT_TRANSIENT``: a transient failure (storage unreachable); retrying may help.
- 4 ``EXIT_INTEGRITY``: the server refused its artifact (sha256 mismatch).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USER = 2
EXIT_TRANSIENT = 3
EXIT_INTEGRITY = 4


class RuntimeFailure(Exception):
    """Base class: a failure with a reason and an exit code."""

    reason = "InternalError"
    exit_code = EXIT_INTERNAL


class UserError(RuntimeFailure):
    """Bad input that retrying cannot fix."""

    reason = "UserError"
    exit_code = EXIT_USER


class TransientError(RuntimeFailure):
    """A failure of something outside us (storage, network) that a retry may fix."""

    reason = "Transient"
    exit_code = EXIT_TRANSIENT


class IntegrityError(UserError):
    """An artifact whose bytes do not match the declared sha256."""

    reason = "IntegrityError"
    exit_code = EXIT_INTEGRITY
