#!/usr/bin/env bash
# System packages the dev tooling needs (Debian). Installs only what is missing.
#   openssl  - the local control plane's certificates
#   iproute2 - the local node's pod network bridge
#   util-linux - mount/umount for the node's state
#   runc, containernetworking-plugins - the node's OCI runtime and CNI plugins (containerd
#              and the kubelet are built from the Go module proxy)
#   iptables, conntrack - kube-proxy's Services
#   buildah, mmdebstrap - the images (the Dockerfile, and a Python base from Debian's packages)
#   curl     - asks the local registry what it holds
#   gcc, libc6-dev - the static pod-sandbox (pause) binary
#   hey      - the serving benchmark's load generator
#   lua5.1   - runs the chart's Argo CD health checks in Argo CD's Lua dialect
set -euo pipefail

needed=()
command -v openssl >/dev/null || needed+=(openssl)
command -v ip >/dev/null || needed+=(iproute2)
command -v unshare >/dev/null || needed+=(util-linux)
command -v hey >/dev/null || needed+=(hey)
command -v lua5.1 >/dev/null || needed+=(lua5.1)
command -v runc >/dev/null || needed+=(runc)
[ -x /usr/lib/cni/bridge ] || needed+=(containernetworking-plugins)
command -v iptables >/dev/null || needed+=(iptables)
command -v conntrack >/dev/null || needed+=(conntrack)
command -v buildah >/dev/null || needed+=(buildah)
command -v mmdebstrap >/dev/null || needed+=(mmdebstrap)
command -v curl >/dev/null || needed+=(curl)
command -v gcc >/dev/null || needed+=(gcc)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || needed+=(libc6-dev)
command -v go >/dev/null || { echo "Go is needed to build the local control plane (the machine image ships it)" >&2; exit 1; }

if [ "${#needed[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${needed[@]}" >/dev/null
fi
