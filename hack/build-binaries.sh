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

# One binary from one Go main package, through a wrapper module that requires it:
#   build_single NAME VERSION MAIN_PACKAGE [EXTRA_LDFLAGS]
build_single() {
  local name=$1 version=$2 main=$3 ldflags="-s -w${4:+ $4}"
  local bin_dir="$MLPLANE_CACHE_DIR/$name-$version" dir="$work_dir/$name-$version"
  mkdir -p "$bin_dir" "$dir"
  link_into_bin_dir "$name"
  have_all "$name" && return 0
  log "building $name $version"
  cat >"$dir/go.mod" <<EOF
module mlplane.io/hack/$name

go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')
EOF
  (cd "$dir" && go get -tool "$main@$version" &&
    go build "${build_flags[@]}" -ldflags "$ldflags" -o "$bin_dir/$name.tmp" "$main")
  mv "$bin_dir/$name.tmp" "$bin_dir/$name"
}

helm_major="${HELM_VERSION%%.*}"
start=$(date +%s)
build_single etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3
build_kubernetes
build_single helm "$HELM_VERSION" "helm.sh/helm/$helm_major/cmd/helm" \
  "-X helm.sh/helm/$helm_major/internal/version.version=$HELM_VERSION"
build_single gofakes3 "$GOFAKES3_VERSION" github.com/johannesboyne/gofakes3/cmd/gofakes3
log "binaries ready in $MLPLANE_BIN_DIR ($(($(date +%s) - start))s)"
