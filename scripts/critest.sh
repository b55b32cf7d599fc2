#!/usr/bin/env bash
# Runs the Kubernetes CRI validation suite (critest, from cri-tools) against a private containerd
# twice, with the runc handler and with the nixlet handler, and prints both results and the specs
# that pass with runc but not with nixlet. nixlet must lose none.
#
#   scripts/critest.sh CRITEST [CONTAINERD_BIN_DIR] [-- critest flags…]
#
# NIXLET_HANDLER_FORM=runc-type declares the nixlet handler as README's "containerd 2.0-2.3"
# form (runtime_type io.containerd.runc.v2, runtime_path naming nixlet's shim) instead of
# runtime_type io.containerd.nixlet.v2.
#
# CRITEST is a critest binary built from cri-tools (not part of this repository; its tree is
# vendored: `go test -c -o critest ./cmd/critest`). CONTAINERD_BIN_DIR holds containerd, ctr and
# containerd-shim-runc-v2 (default: the system's; see scripts/fetch-containerd.sh). Everything
# runs below a scratch directory and is stopped and removed on exit: containerd, a loopback
# registry serving the two test images critest runs (busybox, and busybox httpd as its web
# server image), and a CNI bridge. Images critest pulls from the internet cannot be pulled
# here; those specs fail for both handlers alike. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

critest=$(realpath "${1:?usage: critest.sh CRITEST [CONTAINERD_BIN_DIR] [-- critest flags]}")
shift
bin_dir=""
if [ $# -gt 0 ] && [ "$1" != "--" ]; then bin_dir=$(realpath "$1"); shift; fi
[ "${1:-}" = "--" ] && shift
extra=("$@")

export DEBIAN_FRONTEND=noninteractive
need=()
for p in containernetworking-plugins iptables docker-registry umoci busybox-static; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then apt-get update -q && apt-get install -y -q --no-install-recommends "${need[@]}"; fi

[ -n "$bin_dir" ] && export PATH="$bin_dir:$PATH"
version=$(containerd --version | awk '{print $3}')
major=$(echo "$version" | sed 's/^v//' | cut -d. -f1)
echo "critest.sh: containerd $version ($(command -v containerd))"

cargo build -q -p nixlet-shim
shim_dir=$(mktemp -d /tmp/nixlet-critest-shim.XXXXXX)
cp target/debug/containerd-shim-nixlet-v2 "$shim_dir/"

scratch=$(mktemp -d /tmp/nixlet-critest.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  # containerd's log (with the shims' output) goes beside critest's, for a spec that failed.
  [ -n "${version:-}" ] && cp "$scratch/containerd.log" "${CRITEST_LOG_DIR:-/tmp}/critest-containerd-$version.log" 2>/dev/null || true
  # Shims of this containerd (their -address names its socket) outlive it by design.
  pkill -f -- "-address $scratch/containerd.sock" 2>/dev/null || true
  sleep 1
  grep " $scratch" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  ip link delete cni-critest0 2>/dev/null || true
  rm -rf "$scratch" "$shim_dir"
}
trap cleanup EXIT

# Images: busybox with every applet, and busybox httpd serving port 80.
images() {
  local name=$1 dir=$scratch/images/$1; shift
  mkdir -p "$dir"
  umoci init --layout "$dir/oci" >/dev/null
  umoci new --image "$dir/oci:latest" >/dev/null
  umoci unpack --image "$dir/oci:latest" "$dir/bundle" >/dev/null
  mkdir -p "$dir/bundle/rootfs/bin" "$dir/bundle/rootfs/www" "$dir/bundle/rootfs/tmp" "$dir/bundle/rootfs/etc"
  cp /bin/busybox "$dir/bundle/rootfs/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$dir/bundle/rootfs/bin/$applet"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$dir/bundle/rootfs/etc/passwd"
  echo 'root:x:0:' > "$dir/bundle/rootfs/etc/group"
  echo '<html>It works!</html>' > "$dir/bundle/rootfs/www/index.html"
  umoci repack --image "$dir/oci:latest" "$dir/bundle" >/dev/null
  umoci config --image "$dir/oci:latest" --config.env PATH=/bin "$@" >/dev/null
  tar -C "$dir/oci" -cf "$dir/image.tar" .
}
images busybox --config.cmd sh
images httpd --config.cmd httpd --config.cmd -f --config.cmd -p --config.cmd 80 --config.cmd -h --config.cmd /www
images pause --config.cmd sleep --config.cmd infinity

mkdir -p "$scratch/registry" "$scratch/certs.d/127.0.0.1:5000" "$scratch/cni/net.d" "$scratch/runc"
cat > "$scratch/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $scratch/registry
http:
  addr: 127.0.0.1:5000
YML
docker-registry serve "$scratch/registry.yml" > "$scratch/registry.log" 2>&1 &
pids+=($!)
cat > "$scratch/certs.d/127.0.0.1:5000/hosts.toml" <<TOML
server = "http://127.0.0.1:5000"
[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
TOML
cat > "$scratch/cni/net.d/10-critest.conflist" <<JSON
{ "cniVersion": "1.0.0", "name": "critest", "plugins": [
  { "type": "bridge", "bridge": "cni-critest0", "isGateway": true, "ipMasq": true,
    "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.88.77.0/24" }]], "routes": [{ "dst": "0.0.0.0/0" }] } },
  { "type": "portmap", "capabilities": { "portMappings": true } } ] }
JSON
echo "" > "$scratch/nixlet-config.toml"

case "${NIXLET_HANDLER_FORM:-nixlet-type}" in
  nixlet-type) nixlet_runtime="runtime_type = \"io.containerd.nixlet.v2\"" ;;
  runc-type) nixlet_runtime="runtime_type = \"io.containerd.runc.v2\"
      runtime_path = \"$shim_dir/containerd-shim-nixlet-v2\"" ;;
  *) echo "critest.sh: NIXLET_HANDLER_FORM is nixlet-type or runc-type" >&2; exit 2 ;;
esac
echo "critest.sh: nixlet handler form ${NIXLET_HANDLER_FORM:-nixlet-type}"

pause=localhost/critest/pause:latest
if [ "$major" -ge 2 ]; then
  cri="[plugins.'io.containerd.cri.v1.images']
  snapshotter = \"overlayfs\"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = \"$pause\"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = \"$scratch/certs.d\"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [\"/usr/lib/cni\"]
    conf_dir = \"$scratch/cni/net.d\"
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = \"runc\"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = \"io.containerd.runc.v2\"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.nixlet]
      $nixlet_runtime
      pod_annotations = [\"nixlet.dev/*\", \"flox.dev/*\"]
      container_annotations = [\"nixlet.dev/*\", \"flox.dev/*\"]"
  schema=3
else
  cri="[plugins.\"io.containerd.grpc.v1.cri\"]
  sandbox_image = \"$pause\"
  restrict_oom_score_adj = true
  [plugins.\"io.containerd.grpc.v1.cri\".registry]
    config_path = \"$scratch/certs.d\"
  [plugins.\"io.containerd.grpc.v1.cri\".cni]
    bin_dir = \"/usr/lib/cni\"
    conf_dir = \"$scratch/cni/net.d\"
  [plugins.\"io.containerd.grpc.v1.cri\".containerd]
    snapshotter = \"overlayfs\"
    default_runtime_name = \"runc\"
    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]
      runtime_type = \"io.containerd.runc.v2\"
    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nixlet]
      $nixlet_runtime
      pod_annotations = [\"nixlet.dev/*\", \"flox.dev/*\"]
      container_annotations = [\"nixlet.dev/*\", \"flox.dev/*\"]"
  schema=2
fi
cat > "$scratch/config.toml" <<TOML
version = $schema
root = "$scratch/root"
state = "$scratch/state"
[grpc]
  address = "$scratch/containerd.sock"
[ttrpc]
  address = "$scratch/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$scratch/opt"
$cri
TOML

PATH="$shim_dir:$PATH" NIXLET_CONFIG="$scratch/nixlet-config.toml" \
  containerd --config "$scratch/config.toml" > "$scratch/containerd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$scratch/containerd.sock" ] && break; sleep 0.2; done
ctr_() { ctr --address "$scratch/containerd.sock" "$@"; }
ctr_ -n k8s.io images import --base-name localhost/critest/pause "$scratch/images/pause/image.tar" >/dev/null
for image in busybox httpd; do
  ctr_ -n build images import --base-name "127.0.0.1:5000/critest/$image" "$scratch/images/$image/image.tar" >/dev/null
  ctr_ -n build images push --plain-http "127.0.0.1:5000/critest/$image:latest" >/dev/null
done
cat > "$scratch/test-images.yml" <<YML
defaultTestContainerImage: 127.0.0.1:5000/critest/busybox:latest
webServerTestImage: 127.0.0.1:5000/critest/httpd:latest
YML

run() {
  local handler=$1
  echo "critest.sh: critest with handler $handler"
  "$critest" --runtime-endpoint "unix://$scratch/containerd.sock" \
    --image-endpoint "unix://$scratch/containerd.sock" \
    --runtime-handler "$handler" --test-images-file "$scratch/test-images.yml" \
    --ginkgo.no-color --ginkgo.timeout 50m --ginkgo.json-report "$scratch/report-$handler.json" \
    "${extra[@]}" > "$scratch/critest-$handler.log" 2>&1 || true
  grep -E "^Ran [0-9]+ of [0-9]+ Specs" "$scratch/critest-$handler.log" || tail -5 "$scratch/critest-$handler.log"
  grep -E "Passed \| [0-9]+ Failed" "$scratch/critest-$handler.log" || true
  # Every spec with its state, from Ginkgo's JSON report.
  jq -r '.[].SpecReports[] | select(.LeafNodeType == "It") | "\(.State)\t\(.ContainerHierarchyTexts + [.LeafNodeText] | join(" "))"' \
    "$scratch/report-$handler.json" | sort > "$scratch/specs-$handler"
  awk -F'\t' '$1 == "passed" { print $2 }' "$scratch/specs-$handler" > "$scratch/passed-$handler"
  cp "$scratch/critest-$handler.log" "${CRITEST_LOG_DIR:-/tmp}/critest-$handler-$version.log"
  cp "$scratch/specs-$handler" "${CRITEST_LOG_DIR:-/tmp}/critest-$handler-$version.specs"
}
run runc
run nixlet
echo "critest.sh: specs that pass with runc but not with nixlet:"
lost=$(comm -23 "$scratch/passed-runc" "$scratch/passed-nixlet")
if [ -n "$lost" ]; then echo "$lost"; else echo "  none"; fi
echo "critest.sh: logs and per-spec states in ${CRITEST_LOG_DIR:-/tmp}/critest-{runc,nixlet}-$version.{log,specs}, containerd's in critest-containerd-$version.log"
[ -z "$lost" ]
