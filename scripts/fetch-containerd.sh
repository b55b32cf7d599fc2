#!/usr/bin/env bash
# Fetches a containerd release line from Debian without installing it, and prints the directory
# holding its binaries (containerd, ctr, containerd-shim-runc-v2). The system containerd is never
# touched: the package is downloaded with a private apt state and unpacked with dpkg-deb into a
# private prefix. The mirror is the one this machine's own apt sources name.
#
#   scripts/fetch-containerd.sh 1.7   # Debian 13 (trixie): containerd 1.7
#   scripts/fetch-containerd.sh 2     # the newest 2.x of Debian testing and unstable
#
# Idempotent: a release already unpacked is reused (the package index is still refreshed to
# learn the newest version). runc stays Debian 12's: newer Debian runc needs a newer glibc.
set -euo pipefail

line="${1:?usage: fetch-containerd.sh 1.7|2}"
root="${NIXLET_CONTAINERD_DIR:-/var/lib/nixlet-ci/containerd}"
case "$line" in
  1.7) suites=(trixie); pattern='^1\.7\.' ;;
  2) suites=(testing unstable); pattern='^2\.' ;;
  *) echo "fetch-containerd.sh: unknown release line $line (1.7 or 2)" >&2; exit 2 ;;
esac

# The Debian mirror of this machine: the first non-security URI of its apt sources.
mirror=""
for file in /etc/apt/sources.list.d/*.sources; do
  [ -f "$file" ] || continue
  mirror=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$file")
  [ -n "$mirror" ] && break
done
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' /etc/apt/sources.list)
fi
if [ -z "$mirror" ]; then
  echo "fetch-containerd.sh: no Debian mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list" >&2
  exit 1
fi

state="$root/apt-$line"
mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/download"
: > "$state/sources.list"
for suite in "${suites[@]}"; do
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" >> "$state/sources.list"
done
apt_opts=(
  -o "Dir::Etc::SourceList=$state/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache"
  -o Debug::NoLocking=1 -o APT::Sandbox::User=root
)
apt-get "${apt_opts[@]}" -q update >&2

version=""
while read -r candidate; do
  if [[ "$candidate" =~ $pattern ]] && { [ -z "$version" ] || dpkg --compare-versions "$candidate" gt "$version"; }; then
    version="$candidate"
  fi
done < <(apt-cache "${apt_opts[@]}" madison containerd | awk -F'|' '{ gsub(/ /, "", $2); print $2 }')
if [ -z "$version" ]; then
  echo "fetch-containerd.sh: Debian ${suites[*]} at $mirror has no containerd $line.x" >&2
  exit 1
fi

prefix="$root/$version"
if [ ! -x "$prefix/usr/bin/containerd" ]; then
  (cd "$state/download" && rm -f ./*.deb && apt-get "${apt_opts[@]}" -q download "containerd=$version" >&2)
  rm -rf "$prefix.partial"
  mkdir -p "$prefix.partial"
  dpkg-deb -x "$state/download"/containerd_*.deb "$prefix.partial"
  rm -rf "$prefix"
  mv "$prefix.partial" "$prefix"
fi
"$prefix/usr/bin/containerd" --version >&2
echo "$prefix/usr/bin"
