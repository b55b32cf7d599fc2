#!/usr/bin/env bash
# Builds nixlet's empty image (no layers) and imports it into containerd's k8s.io namespace as
# localhost/nixlet/empty:latest. Its command is nixlet's sentinel /.nixlet/default-command, which
# the shim replaces with the environment's [containerize.config] cmd when a pod gives no command
# (containerd refuses a container with neither a command nor an image command).
#   runtime-class/empty-image.sh [CONTAINERD_ADDRESS]
set -euo pipefail
address=${1:-/run/containerd/containerd.sock}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umoci init --layout "$work/layout"
umoci new --image "$work/layout:latest"
umoci config --image "$work/layout:latest" --config.cmd /.nixlet/default-command \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
tar -C "$work/layout" -cf "$work/empty.tar" .
ctr -a "$address" -n k8s.io images import --base-name localhost/nixlet/empty "$work/empty.tar"
