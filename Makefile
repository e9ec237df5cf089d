# mlplane — one Makefile for development, tests and the demo.
# Every target installs what it needs and is safe to run twice.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEV_STAMP := $(VENV)/.installed
OIP_PROTO := mlplane_runtime/server/oip/grpc_predict_v2.proto
PYTEST_ARGS ?=

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(DEV_STAMP): operator/pyproject.toml runtimes/pyproject.toml requirements/dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e operator -e 'runtimes[parquet,s3]' -r requirements/dev.txt
	touch $@

.PHONY: dev
dev: $(DEV_STAMP) ## create .venv with both distributions (editable) and the test/lint tools

.PHONY: lint
lint: dev ## ruff, mypy and the import contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy operator/mlplane_operator runtimes/mlplane_runtime hack
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

.PHONY: binaries
binaries: ## build (or reuse) Kubernetes, etcd, containerd, CoreDNS, metrics-server, registry, helm
	hack/build-binaries.sh

.PHONY: cluster-up
cluster-up: dev binaries ## start (or reuse) the local cluster: control plane, a real node, our images
	$(BIN)/python hack/cluster.py up

.PHONY: images
images: ## build the Dockerfile's operator and runtime images and push them to the local registry
	hack/build-images.sh mlplane

.PHONY: cluster-down
cluster-down: ## stop the local cluster and remove its state (images and binaries stay cached)
	@if [ -x $(BIN)/python ]; then $(BIN)/python hack/cluster.py down; else $(PYTHON) hack/cluster.py down; fi

.PHONY: crds
crds: dev ## regenerate crds/ from the pydantic models (and the chart's copy)
	$(BIN)/python -m mlplane_operator.api.crdgen crds
	$(MAKE) chart-crds

.PHONY: grpc-stubs
grpc-stubs: dev ## regenerate the gRPC messages of mlplane-serve from its .proto
	cd runtimes && ../$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. $(OIP_PROTO)
	@# A private descriptor pool: tritonclient, KServe and MLServer register the same
	@# `inference.*` messages in the default one, and a process may import both.
	sed -i 's/_descriptor_pool.Default().AddSerializedFile(/_descriptor_pool.DescriptorPool().AddSerializedFile(/' \
		runtimes/$(OIP_PROTO:.proto=_pb2.py)

.PHONY: chart-crds
chart-crds: ## copy crds/*.yaml into the Helm chart (charts/mlplane/crds/)
	mkdir -p charts/mlplane/crds
	rm -f charts/mlplane/crds/*.yaml
	cp crds/*.yaml charts/mlplane/crds/

.PHONY: test
test: lint cluster-up ## lint, then every test (unit and against the local cluster)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

.PHONY: demo
demo: cluster-up ## helm install mlplane on the local cluster, then train, register, verify, promote, serve and query examples/iris
	hack/demo.sh

.PHONY: bench-operator
bench-operator: dev ## operator at scale (N TrainingJobs, M InferenceServices); assumes the cluster is up, e.g. MLPLANE_START_NODE=0 hack/cluster.py up
	$(BIN)/python hack/bench-operator.py $(BENCH_ARGS)

.PHONY: bench-search
bench-search: dev ## benchmark mlplane-train against a bare fit, and a parallel search against sequential fits
	$(BIN)/python hack/bench-search.py $(BENCH_ARGS)

.PHONY: bench-serve
bench-serve: dev ## benchmark mlplane-serve against raw ONNX Runtime, MLServer and KServe
	$(BIN)/python hack/bench-serve/bench.py $(BENCH_ARGS)
