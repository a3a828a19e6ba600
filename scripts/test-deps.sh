#!/usr/bin/env bash
# Installs what the test suite needs outside Python, from Debian's packages:
# a real Redis server (store tests), Redis Sentinel (the relays' failover test), openssl
# (certificates for the TLS test) and Prometheus Alertmanager (the relay's webhook test).
# The tests start their own processes on loopback; no system service is left running.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# The packages would start services on :6379, :26379 and :9093/:9094: tell invoke-rc.d not to.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod 755 /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
for tool in redis-server redis-sentinel openssl prometheus-alertmanager; do command -v "$tool" >/dev/null; done
