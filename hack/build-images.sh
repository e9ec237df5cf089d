#!/usr/bin/env bash
# Build the local cluster's images with buildah and push them to its registry.
#
#   hack/build-images.sh node      # pause (the pod sandbox), coredns, metrics-server
#   hack/build-images.sh mlplane   # the Dockerfile's operator and runtime targets
#   hack/build-images.sh           # both
#
# Each image is tagged by a hash of its inputs, so an unchanged image is neither built nor
# pushed again. The references (by digest) are written to $MLPLANE_IMAGES_ENV
# (default $MLPLANE_CLUSTER_DIR/images.env)
# (IMAGE_<NAME>=registry/repository@sha256:...), which the cluster, the demo and the tests
# read. The registry (hack/cluster.py starts it) must be running.
#
# The Dockerfile's base is the official python:3.11 slim image where a registry serves it.
# None does here, so PYTHON_IMAGE points at a base made from Debian bookworm's packages
# with mmdebstrap: Python 3.11 in a virtual environment at /usr/local/python with pip, as
# the official image has it at /usr/local. pip inside the build reaches PyPI as the host
# does: the host's CA bundle and pip.conf are mounted into each RUN step, never copied
# into an image.
set -euo pipefail

source "$(dirname "$0")/versions.sh"
repo=$(cd "$(dirname "$0")/.." && pwd)
cluster_dir=${MLPLANE_CLUSTER_DIR:-$repo/.cluster}
registry=${MLPLANE_REGISTRY:-127.0.0.1:${MLPLANE_REGISTRY_PORT:-5000}}
images_env=${MLPLANE_IMAGES_ENV:-$cluster_dir/images.env}

log() { printf '[build-images] %s\n' "$*" >&2; }

# runc, not crun: crun refuses this host's hybrid cgroup hierarchy.
export BUILDAH_RUNTIME=${BUILDAH_RUNTIME:-$(command -v runc)}

sha() { sha256sum | cut -c1-16; }

# The digest of registry/repository:tag, or nothing when the registry lacks it.
registry_digest() {
  curl -fsSI \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$registry/v2/$1/manifests/$2" 2>/dev/null |
    tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: *//p' || true
}

# Push localhost/repository:tag unless the registry has it; record its digest as NAME.
publish() {
  local name=$1 repository=$2 tag=$3 digest digest_file
  digest=$(registry_digest "$repository" "$tag")
  if [ -z "$digest" ]; then
    log "pushing $registry/$repository:$tag"
    # A file of its own: two checkouts sharing a cluster may push at the same time.
    digest_file=$(mktemp)
    buildah push --quiet --tls-verify=false --digestfile "$digest_file" \
      "localhost/$repository:$tag" "docker://$registry/$repository:$tag"
    digest=$(cat "$digest_file")
    rm -f "$digest_file"
  fi
  sed -i "/^IMAGE_$name=/d" "$images_env"
  echo "IMAGE_$name=$registry/$repository@$digest" >>"$images_env"
}

have_image() { buildah inspect --type image "localhost/$1" >/dev/null 2>&1; }

# An image of one static binary from the cache, run as the nonroot user.
binary_image() {
  local name=$1 binary=$2 tag=$3
  shift 3
  if ! have_image "mlplane/$name:$tag"; then
    log "building mlplane/$name:$tag"
    local container
    container=$(buildah from scratch)
    buildah copy --quiet --chmod 0755 "$container" "$binary" "/$name" >/dev/null
    buildah config --user 65532:65532 --entrypoint "[\"/$name\"]" "$@" "$container"
    buildah commit --quiet --rm "$container" "localhost/mlplane/$name:$tag" >/dev/null
  fi
  publish "$(echo "$name" | tr a-z- A-Z_)" "mlplane/$name" "$tag"
}

node_images() {
  local pause="$cluster_dir/pause"
  gcc -static -O2 -Wall -Werror -o "$pause" "$repo/hack/images/pause.c"
  strip "$pause"
  binary_image pause "$pause" "$(sha <"$repo/hack/images/pause.c")"
  binary_image coredns "$MLPLANE_BIN_DIR/coredns" "$COREDNS_VERSION" --port 53/udp
  binary_image metrics-server "$MLPLANE_BIN_DIR/metrics-server" "$METRICS_SERVER_VERSION"
}

python_base() {
  local packages=python3,python3-venv,passwd,ca-certificates
  local tag="3.11-bookworm-$(printf '%s\n' "$packages" "$(declare -f python_base)" | sha)"
  base="localhost/mlplane/python:$tag"
  have_image "mlplane/python:$tag" && return 0
  log "building $base from Debian bookworm (mmdebstrap)"
  local rootfs="$cluster_dir/python-rootfs.tar" container
  mmdebstrap --quiet --variant=minbase --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='chroot "$1" python3 -m venv /usr/local/python' \
    --customize-hook='ln -s /usr/local/python/bin/python "$1/usr/local/bin/python"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$rootfs"
  container=$(buildah from scratch)
  buildah add --quiet "$container" "$rootfs" / >/dev/null
  buildah config --cmd python3 --env LANG=C.UTF-8 \
    --env PATH=/usr/local/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    "$container"
  buildah commit --quiet --rm "$container" "$base" >/dev/null
  rm -f "$rootfs"
}

# The hash of a Dockerfile target's inputs: the base, the Dockerfile and its context files.
inputs_hash() {
  local target=$1
  shift
  {
    buildah inspect --type image --format '{{.FromImageID}}' "$base"
    sha256sum "$repo/Dockerfile"
    (cd "$repo" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' \
      ! -path '*.egg-info/*' -print0 | sort -z | xargs -0 sha256sum)
    echo "$target"
  } | sha
}

dockerfile_image() {
  local target=$1 tag
  shift
  tag=$(inputs_hash "$target" "$@")
  if ! have_image "mlplane/$target:$tag"; then
    log "building mlplane/$target:$tag (Dockerfile target $target)"
    local started=$SECONDS
    buildah bud --quiet --layers --pull=never --network=host \
      --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
      $( [ -f /etc/pip.conf ] && echo --volume /etc/pip.conf:/etc/pip.conf:ro ) \
      --build-arg "PYTHON_IMAGE=$base" --target "$target" \
      -t "localhost/mlplane/$target:$tag" "$repo" >/dev/null
    log "built mlplane/$target:$tag in $((SECONDS - started))s"
  fi
  publish "$(echo "$target" | tr a-z A-Z)" "mlplane/$target" "$tag"
}

mlplane_images() {
  python_base
  dockerfile_image operator requirements/operator.txt operator/pyproject.toml operator/mlplane_operator
  dockerfile_image runtime requirements/runtime.txt runtimes/pyproject.toml runtimes/mlplane_runtime
}

mkdir -p "$cluster_dir"
touch "$images_env"
case "${1:-all}" in
  node) node_images ;;
  mlplane) mlplane_images ;;
  all) node_images && mlplane_images ;;
  *) echo "usage: $0 [node|mlplane|all]" >&2; exit 2 ;;
esac
