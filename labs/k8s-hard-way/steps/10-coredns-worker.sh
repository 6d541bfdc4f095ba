#!/usr/bin/env bash
# Lesson 10 (Module 04, Cluster), worker part: the kubelet tells pods to use the cluster DNS, CoreDNS on
# control-plane (clusterDNS 172.16.0.2, clusterDomain cluster.local), through the drop-in 60-cluster-dns.conf.
# Safe to run again.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

main() {
  put /var/lib/kubelet/config.d/60-cluster-dns.conf 0644 <<'YAML'
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
clusterDNS:
  - 172.16.0.2
clusterDomain: cluster.local
YAML
  start kubelet
  wait_for 120 "the kubelet's health endpoint" 'curl -fsS http://127.0.0.1:10248/healthz'
}

main "$@" </dev/null
