#!/usr/bin/env bash
# Build the local control plane from the Go module proxy: kube-apiserver,
# kube-controller-manager, kube-scheduler and kubectl from k8s.io/kubernetes, etcd from
# go.etcd.io/etcd/server/v3, helm, and gofakes3 (an S3-compatible server the tests
# use as the object store, as MinIO would be in a cluster). Binaries are cached under the user's cache
# directory keyed by version, so a second run does nothing.
#
#   hack/build-binaries.sh          # build what is missing, print the bin directory
#
# Overridable: KUBE_VERSION, ETCD_VERSION, HELM_VERSION, GOFAKES3_VERSION, MLPLANE_CACHE_DIR.
set -euo pipefail

source "$(dirname "$0")/versions.sh"

work_dir="$MLPLANE_CACHE_DIR/build"
mkdir -p "$MLPLANE_BIN_DIR" "$work_dir"

log() { printf '[build-binaries] %s\n' "$*" >&2; }

export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
build_flags=(-trimpath)

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

build_kubernetes() {
  local bin_dir="$MLPLANE_CACHE_DIR/kubernetes-$KUBE_VERSION"
  mkdir -p "$bin_dir"
  link_into_bin_dir kube-apiserver kube-controller-manager kube-scheduler kubectl
  have_all kube-apiserver kube-controller-manager kube-scheduler kubectl && return 0
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
    echo "go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    sed -nE "s#^\s*(k8s\.io/[a-z0-9-]+) => \./staging/src/k8s\.io/[a-z0-9-]+\s*\$#\t\1 => \1 $staging_version#p" "$served_mod"
    echo ")"
  } >"$dir/go.mod"
  (cd "$dir" && for tool in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
      go get -tool "k8s.io/kubernetes/cmd/$tool@$KUBE_VERSION"
    done)
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  local stamp="" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    stamp+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    stamp+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  local tool
  for tool in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [ -x "$bin_dir/$tool" ] && continue
    log "building $tool $KUBE_VERSION"
    (cd "$dir" && go build "${build_flags[@]}" -ldflags "-s -w$stamp" \
      -o "$bin_dir/$tool.tmp" "k8s.io/kubernetes/cmd/$tool")
    mv "$bin_dir/$tool.tmp" "$bin_dir/$tool"
  done
}

build_etcd() {
  local bin_dir="$MLPLANE_CACHE_DIR/etcd-$ETCD_VERSION"
  mkdir -p "$bin_dir"
  link_into_bin_dir etcd
  have_all etcd && return 0
  local dir="$work_dir/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  log "building etcd $ETCD_VERSION"
  cat >"$dir/go.mod" <<EOF
module mlplane.io/hack/etcd

go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')
EOF
  (cd "$dir" && go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION" &&
    go build "${build_flags[@]}" -ldflags "-s -w" -o "$bin_dir/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$bin_dir/etcd.tmp" "$bin_dir/etcd"
}

build_helm() {
  local bin_dir="$MLPLANE_CACHE_DIR/helm-$HELM_VERSION"
  mkdir -p "$bin_dir"
  link_into_bin_dir helm
  have_all helm && return 0
  local dir="$work_dir/helm-$HELM_VERSION" major="${HELM_VERSION%%.*}"
  mkdir -p "$dir"
  log "building helm $HELM_VERSION"
  cat >"$dir/go.mod" <<EOF
module mlplane.io/hack/helm

go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')
EOF
  local stamp="-X helm.sh/helm/$major/internal/version.version=$HELM_VERSION"
  (cd "$dir" && go get -tool "helm.sh/helm/$major/cmd/helm@$HELM_VERSION" &&
    go build "${build_flags[@]}" -ldflags "-s -w $stamp" -o "$bin_dir/helm.tmp" "helm.sh/helm/$major/cmd/helm")
  mv "$bin_dir/helm.tmp" "$bin_dir/helm"
}

build_gofakes3() {
  local bin_dir="$MLPLANE_CACHE_DIR/gofakes3-$GOFAKES3_VERSION"
  mkdir -p "$bin_dir"
  link_into_bin_dir gofakes3
  have_all gofakes3 && return 0
  local dir="$work_dir/gofakes3-$GOFAKES3_VERSION" main=github.com/johannesboyne/gofakes3/cmd/gofakes3
  mkdir -p "$dir"
  log "building gofakes3 $GOFAKES3_VERSION"
  cat >"$dir/go.mod" <<EOF
module mlplane.io/hack/gofakes3

go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')
EOF
  (cd "$dir" && go get -tool "$main@$GOFAKES3_VERSION" &&
    go build "${build_flags[@]}" -ldflags "-s -w" -o "$bin_dir/gofakes3.tmp" "$main")
  mv "$bin_dir/gofakes3.tmp" "$bin_dir/gofakes3"
}

start=$(date +%s)
build_etcd
build_kubernetes
build_helm
build_gofakes3
log "binaries ready in $MLPLANE_BIN_DIR ($(($(date +%s) - start))s)"
