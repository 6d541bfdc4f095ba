#!/usr/bin/env bash
# Lesson 2 (Module 02, Worker Node), on each worker: a standalone kubelet (no API server yet) run as
# `kubelet --config-dir=/var/lib/kubelet/config.d/` with the drop-ins 99-cri.conf, 70-authnz.conf and
# 50-static-pods.conf (plus 40-resolv-conf.conf where systemd-resolved runs), a static pod in
# /etc/kubernetes/manifests, crictl with /etc/crictl.yaml, and kubeletctl. Safe to run again.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ARCH=$(dpkg --print-architecture)

main() {
  local f

  f=$(download kubelet)
  put_file "$f" /usr/local/bin/kubelet 0755

  f=$(download "crictl-*-linux-$ARCH.tar.gz")
  unpack "$f" crictl
  put_file "$WORK/crictl/crictl" /usr/local/bin/crictl 0755

  f=$(download "kubeletctl_linux_$ARCH")
  put_file "$f" /usr/local/bin/kubeletctl 0755

  put /etc/crictl.yaml 0644 <<'YAML'
runtime-endpoint: unix:///run/containerd/containerd.sock
image-endpoint: unix:///run/containerd/containerd.sock
timeout: 10
YAML

  install -d -m 0755 /var/lib/kubelet/config.d /etc/kubernetes/manifests

  # Drop-ins are merged in file-name order, so 99-cri.conf has the last word.
  put /var/lib/kubelet/config.d/99-cri.conf 0644 <<'YAML'
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
cgroupDriver: systemd
YAML

  # Without a config file the kubelet starts with its legacy defaults: anonymous requests allowed, every request
  # authorized, read-only port 10255 open (what kubeletctl exploits). Standalone, there is no API server to ask
  # (webhook), so the lesson turns anonymous access off and closes the read-only port.
  put /var/lib/kubelet/config.d/70-authnz.conf 0644 <<'YAML'
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
readOnlyPort: 0
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
YAML

  put /var/lib/kubelet/config.d/50-static-pods.conf 0644 <<'YAML'
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: /etc/kubernetes/manifests
YAML

  # Where systemd-resolved runs (Ubuntu), /etc/resolv.conf names its stub 127.0.0.53, which no pod can reach from
  # its own network namespace. As kubeadm does, the kubelet then gives pods of dnsPolicy Default the file that
  # lists the real servers (every pod's search domains come from it too).
  if [[ -s /run/systemd/resolve/resolv.conf ]]; then
    put /var/lib/kubelet/config.d/40-resolv-conf.conf 0644 <<'YAML'
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
resolvConf: /run/systemd/resolve/resolv.conf
YAML
  elif [[ -e /var/lib/kubelet/config.d/40-resolv-conf.conf ]]; then
    rm -f /var/lib/kubelet/config.d/40-resolv-conf.conf
    CHANGED=1
  fi

  # There is no pod network until the Network lesson, so the static pod uses the host's network.
  put /etc/kubernetes/manifests/nginx.yaml 0644 <<'YAML'
apiVersion: v1
kind: Pod
metadata:
  name: nginx
  labels:
    app: nginx
spec:
  hostNetwork: true
  containers:
    - name: nginx
      image: docker.io/library/nginx:1.27
      ports:
        - containerPort: 80
YAML

  put /etc/systemd/system/kubelet.service 0644 <<'UNIT'
[Unit]
Description=Kubernetes kubelet
Documentation=https://kubernetes.io/docs/reference/command-line-tools-reference/kubelet/
After=containerd.service
Wants=containerd.service

[Service]
ExecStart=/usr/local/bin/kubelet --config-dir=/var/lib/kubelet/config.d/
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT
  start kubelet

  wait_for 120 "the kubelet's health endpoint" 'curl -fsS http://127.0.0.1:10248/healthz'
  # The first start pulls the pause and nginx images.
  wait_for 300 "the static pod to run" \
    'crictl pods --name "^nginx-" --state ready -q | grep -q . && crictl ps --name "^nginx$" --state running -q | grep -q .'
}

main "$@" </dev/null
