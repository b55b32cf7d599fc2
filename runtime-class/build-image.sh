#!/usr/bin/env bash
# Builds the nixlet node image without a Docker daemon, as an OCI layout with umoci.
#
#   runtime-class/build-image.sh [OUT_DIR]          (default: target/nixlet-image)
#
# OUT_DIR/rootfs           the image's files (also the build context of runtime-class/Dockerfile)
# OUT_DIR/oci              OCI layout, tagged $NIXLET_IMAGE_TAG (default 0.1.0)
# OUT_DIR/nixlet-node.tar  that layout as one file, for
#                            ctr -n k8s.io images import --base-name localhost/nixlet-node OUT_DIR/nixlet-node.tar
#                          or skopeo copy oci-archive:OUT_DIR/nixlet-node.tar docker://REGISTRY/nixlet-node:TAG
#
# Binaries are statically linked (glibc, crt-static): the shim and CLI are copied onto nodes
# whose libc nixlet does not know, and the image has no libc at all.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-target/nixlet-image}
tag=${NIXLET_IMAGE_TAG:-0.1.0}
busybox=${BUSYBOX:-/bin/busybox}   # Debian's busybox-static
host=$(rustc -vV | sed -n 's/^host: //p')

for tool in umoci readelf tar; do
  command -v "$tool" >/dev/null || { echo "build-image.sh: $tool is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
done

# An explicit --target applies RUSTFLAGS to the binaries only, not to build scripts and proc
# macros, which must stay dynamic to be loaded by cargo and rustc.
RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --release --locked --target "$host" -p nixlet-cli -p nixlet-shim
bin="target/$host/release"

static() { ! readelf -l "$1" | grep -q 'Requesting program interpreter'; }
for file in "$bin/nixlet" "$bin/containerd-shim-nixlet-v2" "$busybox"; do
  static "$file" || { echo "build-image.sh: $file is dynamically linked" >&2; exit 1; }
done

rm -rf "$out"
mkdir -p "$out/rootfs/bin" "$out/rootfs/usr/local/bin" "$out/rootfs/tmp"
chmod 1777 "$out/rootfs/tmp"
cp "$busybox" "$out/rootfs/bin/busybox"
for applet in sh nsenter ls cat; do
  ln -s busybox "$out/rootfs/bin/$applet"
done
install -m 0755 "$bin/nixlet" "$bin/containerd-shim-nixlet-v2" "$out/rootfs/usr/local/bin/"

umoci init --layout "$out/oci"
umoci new --image "$out/oci:$tag"
umoci insert --image "$out/oci:$tag" "$out/rootfs" /
umoci config --image "$out/oci:$tag" \
  --config.entrypoint /usr/local/bin/nixlet \
  --config.env PATH=/usr/local/bin:/bin \
  --config.user 0:0
umoci gc --layout "$out/oci"
tar -C "$out/oci" -cf "$out/nixlet-node.tar" .

echo "build-image.sh: $out/oci:$tag and $out/nixlet-node.tar"
