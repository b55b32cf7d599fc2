#!/usr/bin/env bash
# Builds the echoserver into a signed Nix binary cache and an environment that names it.
#
#   examples/echoserver/build-cache.sh OUT
#
# OUT/cache          a file:// binary cache (zstd NARs, signed), ready to serve over HTTP
# OUT/keys           the signing key pair (kept across runs); OUT/keys/public is the trusted key
# OUT/environments   a `dir` environment source: nixlet/echoserver/1/manifest.toml
# OUT/store-path     the echoserver's store path
set -euo pipefail
out=$(realpath -m "${1:?usage: build-cache.sh OUT}")
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mkdir -p "$out/keys" "$out/build"
export NIX_CONFIG="substituters =
experimental-features = nix-command"

# A static binary has no store references: the closure is exactly what the derivation adds.
RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --release \
  --manifest-path "$root/Cargo.toml" -p nixlet-echoserver \
  --target "$(uname -m)-unknown-linux-gnu" --target-dir "$root/target/static"
binary="$root/target/static/$(uname -m)-unknown-linux-gnu/release/echoserver"

mkdir -p "$out/build/busybox"
cp /bin/busybox "$out/build/busybox/busybox"
path=$(nix-build "$here/echoserver.nix" --no-out-link \
  --arg binary "$binary" --arg busyboxDir "$out/build/busybox")
# Keep it from host GC while the cache is built.
nix-store --add-root "$out/build/result" --indirect --realise "$path" >/dev/null

if [ ! -f "$out/keys/secret" ]; then
  nix-store --generate-binary-cache-key nixlet-example-1 "$out/keys/secret" "$out/keys/public"
fi
nix store sign --key-file "$out/keys/secret" --recursive "$path"
nix copy --to "file://$out/cache?compression=zstd" "$path"

mkdir -p "$out/environments/nixlet/echoserver/1"
cat > "$out/environments/nixlet/echoserver/1/manifest.toml" <<TOML
version = 1

[install]
echoserver.store-path = "$path"

[vars]
MESSAGE = "hello from nix"
PORT = "8080"
TOML
echo "$path" > "$out/store-path"
echo "echoserver: $path"
echo "closure:"; nix-store -qR "$path" | sed 's/^/  /'
echo "trusted key: $(cat "$out/keys/public")"
