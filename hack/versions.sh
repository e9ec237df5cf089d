# Pinned versions of the local cluster and where its binaries are cached.
# Sourced by the hack/ scripts; every value can be overridden from the environment.
: "${KUBE_VERSION:=v1.37.2}"
: "${ETCD_VERSION:=v3.6.16}"
: "${CONTAINERD_VERSION:=v2.4.2}"
: "${COREDNS_VERSION:=v1.15.0}"
: "${METRICS_SERVER_VERSION:=v0.8.0}"
: "${REGISTRY_VERSION:=v3.1.2}"
: "${HELM_VERSION:=v3.22.0}"
: "${GOFAKES3_VERSION:=v1.2.0}"
: "${MLPLANE_CACHE_DIR:=${XDG_CACHE_HOME:-$HOME/.cache}/mlplane}"
: "${MLPLANE_BIN_DIR:=$MLPLANE_CACHE_DIR/bin}"
export KUBE_VERSION ETCD_VERSION CONTAINERD_VERSION COREDNS_VERSION METRICS_SERVER_VERSION \
  REGISTRY_VERSION HELM_VERSION GOFAKES3_VERSION MLPLANE_CACHE_DIR MLPLANE_BIN_DIR
