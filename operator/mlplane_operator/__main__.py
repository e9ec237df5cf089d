"""`python -m mlplane_operator`: run the operator.

Settings come from MLPLANE_* environment variables (see settings.py); invalid ones stop
the operator at once with a message naming the variable.
"""

from __future__ import annotations

import logging
import sys

import kopf
from pydantic import ValidationError

import mlplane_operator.handlers  # importing registers the handlers with Kopf
from mlplane_operator import kube, metrics
from mlplane_operator.settings import OperatorSettings, get_settings


def _settings_or_exit() -> OperatorSettings:
    try:
        return get_settings()
    except ValidationError as error:
        for problem in error.errors():
            variable = "MLPLANE_" + "_".join(str(part) for part in problem["loc"]).upper()
            print(f"invalid setting {variable}: {problem['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


def main() -> None:
    settings = _settings_or_exit()
    logging.getLogger().setLevel(settings.log_level)  # Kopf installs the handler
    kube.load_config()
    metrics.serve(settings.metrics_port)
    kopf.configure(verbose=settings.log_level == "DEBUG")
    kopf.run(
        clusterwide=not settings.watch_namespaces,
        namespaces=settings.watch_namespaces,
        standalone=settings.peering is None,
        peering_name=settings.peering,  # naming a peering makes its CRD mandatory
        priority=mlplane_operator.handlers.PRIORITY,
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
    )


if __name__ == "__main__":
    main()
