#!/usr/bin/env bash
# Installs what Switchyard needs on a fresh Debian 12 machine (as root).
# Safe to run again: only missing packages are installed.
set -euo pipefail
PKGS=(iptables ipset nftables libmnl-dev libnftnl-dev libsqlite3-dev etcd-server etcd-client pkg-config ipvsadm conntrack socat iproute2 curl procps kmod openssl
      containernetworking-plugins iperf3 python3 qemu-system-x86 busybox-static cpio libstdc++-12-dev
      containerd runc docker-registry libsodium23 nginx apache2-utils chromium gdb)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Installed, not started: nginx (the ingress controller's) is run by the tests and netlab
  # on their own ports; Debian's postinst would start it on :80.
  norc=""; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; norc=1; }
  rc=0; apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
  [ -z "$norc" ] || rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || exit "$rc"
fi
# The official Python client, which tests drive the API server with.
python3 -c 'import kubernetes' 2>/dev/null || python3 -m pip install -q kubernetes >/dev/null 2>&1 \
  || echo "setup: could not install the kubernetes Python client (pip install kubernetes); its tests will fail" >&2
command -v swift >/dev/null || { echo "setup: swift is not on PATH (expected /opt/swift)" >&2; exit 1; }
