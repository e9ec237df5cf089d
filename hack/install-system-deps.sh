#!/usr/bin/env bash
# System packages the dev tooling needs (Debian). Installs only what is missing.
#   openssl  - the local control plane's certificates
#   iproute2 - the local node's pod network (bridge, veth, network namespaces)
#   util-linux - unshare/nsenter/mount for pods' private mount namespaces
#   hey      - the serving benchmark's load generator
#   lua5.1   - runs the chart's Argo CD health checks in Argo CD's Lua dialect
set -euo pipefail

needed=()
command -v openssl >/dev/null || needed+=(openssl)
command -v ip >/dev/null || needed+=(iproute2)
command -v unshare >/dev/null || needed+=(util-linux)
command -v hey >/dev/null || needed+=(hey)
command -v lua5.1 >/dev/null || needed+=(lua5.1)
command -v go >/dev/null || { echo "Go is needed to build the local control plane (the machine image ships it)" >&2; exit 1; }

if [ "${#needed[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${needed[@]}" >/dev/null
fi
