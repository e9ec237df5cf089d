# syntax=docker/dockerfile:1
# mlplane images, one multi-stage build:
#
#   docker build --target operator -t mlplane/operator:0.1.0 .   # python -m mlplane_operator
#   docker build --target runtime  -t mlplane/runtime:0.1.0 .    # mlplane-train|serve|monitor
#
# Dependencies come from the lock files (requirements/*.txt, written by
# hack/lock-requirements.py) and are installed in builder stages into a virtualenv that
# the final stages copy; the final stages carry no pip, no compilers and no apt caches.
#
# The base is pinned by tag. Pin it by digest as well where the registry is reachable
# (python:3.11.14-slim-bookworm@sha256:...): it could not be resolved where this file
# was written, and a digest that was never checked is worse than none.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Builders: the base image's pip installs into a venv created without pip of its own.
# Bytecode is compiled here (pip's default): the final images run with a read-only root
# filesystem, where Python could not cache it, and importing the kubernetes client from
# source on every start would slow the operator's start-up.
FROM base AS operator-builder
WORKDIR /src
RUN python -m venv --without-pip /opt/venv
COPY requirements/operator.txt requirements/
RUN pip --python /opt/venv/bin/python install -r requirements/operator.txt
COPY operator/ operator/
RUN pip --python /opt/venv/bin/python install --no-deps ./operator

FROM base AS runtime-builder
WORKDIR /src
RUN python -m venv --without-pip /opt/venv
COPY requirements/runtime.txt requirements/
RUN pip --python /opt/venv/bin/python install -r requirements/runtime.txt
COPY runtimes/ runtimes/
RUN pip --python /opt/venv/bin/python install --no-deps ./runtimes
# LightGBM's library needs the OpenMP runtime libgomp.so.1, which slim bases lack; the
# scikit-learn wheel ships one (auditwheel-renamed): give it the name LightGBM asks for.
RUN gomp="$(find /opt/venv/lib -path '*/scikit_learn.libs/libgomp-*' -print -quit)" \
 && test -n "$gomp" && ln -s "$gomp" /opt/venv/lib/libgomp.so.1

# What both final images share: no packaging tools, a fixed non-root user (65532, the
# distroless "nonroot" convention, so runAsUser in the chart matches the image).
FROM base AS final-base
RUN python -m pip uninstall --yes pip setuptools wheel \
 && groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --home-dir /home/nonroot --create-home \
      --shell /usr/sbin/nologin nonroot
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/nonroot
WORKDIR /home/nonroot
USER 65532:65532

FROM final-base AS operator
ARG VERSION=0.1.0
ARG SOURCE=https://github.com/mlplane/mlplane
LABEL org.opencontainers.image.title="mlplane-operator" \
      org.opencontainers.image.description="mlplane: Kopf operator for TrainingJob, ModelVersion and InferenceService" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=operator-builder /opt/venv /opt/venv
# 8080: Prometheus /metrics, 8081: liveness /healthz (MLPLANE_METRICS_PORT, MLPLANE_HEALTH_PORT).
EXPOSE 8080 8081
ENTRYPOINT ["python", "-m", "mlplane_operator"]

FROM final-base AS runtime
ARG VERSION=0.1.0
ARG SOURCE=https://github.com/mlplane/mlplane
LABEL org.opencontainers.image.title="mlplane-runtime" \
      org.opencontainers.image.description="mlplane runtimes: trainer, ONNX Runtime server and drift monitor" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=runtime-builder /opt/venv /opt/venv
ENV LD_LIBRARY_PATH=/opt/venv/lib
# No ENTRYPOINT: pods choose mlplane-train, mlplane-serve or mlplane-monitor as command.
EXPOSE 8080
CMD ["mlplane-serve"]
