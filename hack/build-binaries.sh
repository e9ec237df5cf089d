#!/usr/bin/env bash
# Build the local cluster from the Go module proxy: the control plane (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl) and the node agents (kubelet,
# kube-proxy) from k8s.io/kubernetes, etcd, containerd with its runc shim, CoreDNS,
# metrics-server, an OCI registry (distribution), helm, and gofakes3 (an S3-compatible
# server the tests use as the object store, as MinIO would be in a cluster). runc and the
# CNI plugins are Debian's (hack/install-system-deps.sh). Binaries are cached under the
# user's cache directory keyed by version, so a second run does nothing.
#
#   hack/build-binaries.sh          # build what is missing
#
# Overridable: the *_VERSION variables of hack/versions.sh, MLPLANE_CACHE_DIR.
set -euo pipefail

source "$(dirname "$0")/versions.sh"

work_dir="$MLPLANE_CACHE_DIR/build"
mkdir -p "$MLPLANE_BIN_DIR" "$work_dir"

log() { printf '[build-binaries] %s\n' "$*" >&2; }

export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
build_flags=(-trimpath)
go_line="go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')"

have_all() {
  local name
  for name in "$@"; do [ -x "$bin_dir/$name" ] || return 1; done
}

# Each component is cached in a directory named by its version; $MLPLANE_BIN_DIR holds
# links to the pinned ones, so changing one pin rebuilds only that component.
link_into_bin_dir() {
  local name
  for name in "$@"; do ln -sfn "$bin_dir/$name" "$MLPLANE_BIN_DIR/$name"; done
}

kube_tools=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
kube_minor="${KUBE_VERSION#v1.}" kube_minor="${kube_minor%%.*}"

build_kubernetes() {
  local bin_dir="$MLPLANE_CACHE_DIR/kubernetes-$KUBE_VERSION"
  mkdir -p "$bin_dir"
  link_into_bin_dir "${kube_tools[@]}"
  have_all "${kube_tools[@]}" && return 0
  local dir="$work_dir/kubernetes-$KUBE_VERSION" staging_version="v0.${KUBE_VERSION#v1.}"
  mkdir -p "$dir"
  log "kubernetes $KUBE_VERSION: resolving modules (staging at $staging_version)"
  # k8s.io/kubernetes replaces its staging modules with ./staging paths that do not
  # exist in the module zip. Generate the matching replace list from the served go.mod
  # so it always agrees with the release.
  local served_mod
  served_mod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  {
    echo "module mlplane.io/hack/kubernetes"
    echo
    echo "$go_line"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    sed -nE "s#^\s*(k8s\.io/[a-z0-9-]+) => \./staging/src/k8s\.io/[a-z0-9-]+\s*\$#\t\1 => \1 $staging_version#p" "$served_mod"
    echo ")"
  } >"$dir/go.mod"
  local tool
  (cd "$dir" && for tool in "${kube_tools[@]}"; do
      go get -tool "k8s.io/kubernetes/cmd/$tool@$KUBE_VERSION"
    done)
  local stamp="" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    stamp+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$kube_minor"
    stamp+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for tool in "${kube_tools[@]}"; do
    [ -x "$bin_dir/$tool" ] && continue
    log "building $tool $KUBE_VERSION"
    (cd "$dir" && go build "${build_flags[@]}" -ldflags "-s -w$stamp" \
      -o "$bin_dir/$tool.tmp" "k8s.io/kubernetes/cmd/$tool")
    mv "$bin_dir/$tool.tmp" "$bin_dir/$tool"
  done
}

# Binaries from main packages of one module version, through a wrapper module:
#   build_go CACHE_NAME VERSION LDFLAGS BINARY=PACKAGE [BINARY=PACKAGE ...]
# The cache directory is CACHE_NAME (name, version and anything stamped into the build);
# LDFLAGS are added to "-s -w".
build_go() {
  local cache_name=$1 version=$2 ldflags="-s -w${3:+ $3}"
  shift 3
  local bin_dir="$MLPLANE_CACHE_DIR/$cache_name" dir="$work_dir/$cache_name"
  local binaries=("${@%%=*}")
  mkdir -p "$bin_dir" "$dir"
  link_into_bin_dir "${binaries[@]}"
  have_all "${binaries[@]}" && return 0
  log "building $cache_name (${binaries[*]})"
  printf 'module mlplane.io/hack/%s\n\n%s\n' "${cache_name%%-v*}" "$go_line" >"$dir/go.mod"
  local pair binary package
  for pair in "$@"; do
    binary=${pair%%=*} package=${pair#*=}
    [ -x "$bin_dir/$binary" ] && continue
    (cd "$dir" && go get -tool "$package@$version" &&
      go build "${build_flags[@]}" -ldflags "$ldflags" -o "$bin_dir/$binary.tmp" "$package")
    mv "$bin_dir/$binary.tmp" "$bin_dir/$binary"
  done
}

containerd=github.com/containerd/containerd/v2
helm_major="${HELM_VERSION%%.*}"
# helm renders for the Kubernetes version stamped into it: stamp the cluster's, so that
# `helm template` needs no --kube-version.
helm_ldflags="-X helm.sh/helm/$helm_major/internal/version.version=$HELM_VERSION"
for pkg in chartutil lint/rules; do
  helm_ldflags+=" -X helm.sh/helm/$helm_major/pkg/$pkg.k8sVersionMajor=1"
  helm_ldflags+=" -X helm.sh/helm/$helm_major/pkg/$pkg.k8sVersionMinor=$kube_minor"
done

start=$(date +%s)
build_go "etcd-$ETCD_VERSION" "$ETCD_VERSION" "" etcd=go.etcd.io/etcd/server/v3
build_kubernetes
build_go "containerd-$CONTAINERD_VERSION" "$CONTAINERD_VERSION" \
  "-X $containerd/version.Version=$CONTAINERD_VERSION" \
  containerd="$containerd/cmd/containerd" \
  containerd-shim-runc-v2="$containerd/cmd/containerd-shim-runc-v2" \
  ctr="$containerd/cmd/ctr"
build_go "coredns-$COREDNS_VERSION" "$COREDNS_VERSION" "" coredns=github.com/coredns/coredns
build_go "metrics-server-$METRICS_SERVER_VERSION" "$METRICS_SERVER_VERSION" "" \
  metrics-server=sigs.k8s.io/metrics-server/cmd/metrics-server
build_go "registry-$REGISTRY_VERSION" "$REGISTRY_VERSION" "" \
  registry=github.com/distribution/distribution/v3/cmd/registry
build_go "helm-$HELM_VERSION-k8s1.$kube_minor" "$HELM_VERSION" "$helm_ldflags" \
  helm="helm.sh/helm/$helm_major/cmd/helm"
build_go "gofakes3-$GOFAKES3_VERSION" "$GOFAKES3_VERSION" "" \
  gofakes3=github.com/johannesboyne/gofakes3/cmd/gofakes3
log "binaries ready in $MLPLANE_BIN_DIR ($(($(date +%s) - start))s)"
