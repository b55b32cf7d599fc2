# Closures for the benchmarks, built without nixpkgs: every builder is a static busybox.
#
# `data`: `count` paths of about `bytes` each, linked as a binary tree (path i refers to paths
# 2i+1 and 2i+2, so the closure has depth log2(count) like real ones, not a flat star or a long
# chain). Each path holds a third incompressible bytes (/dev/urandom), a third hex text of random
# bytes (compresses about 2:1) and a third numbers split into 8 KiB files (compresses well, and
# makes unpacking create files as real packages do).
#
# `app`: a root with bin/busybox that refers to the root of `data`: a program with a closure of
# `count + 1` paths, for cold pod starts.
#
# `variants`: a root referring to `variantCount` variants of `app`, each with bin/busybox, 5 MB of
# its own random bytes and a reference to the root of `data`: environments that share most of
# their closure, for the disk scenario.
#
# `mounts`: a root with bin/busybox that refers to `count - 1` tiny paths: a closure of exactly
# `count` paths whose cost is the number of paths, not their size.
{ busyboxDir, tag, count, bytes ? 0, variantCount ? 5 }:
let
  bbStore = builtins.path { path = busyboxDir; name = "nixlet-bench-busybox-src"; };
  bb = "${bbStore}/busybox";
  mk = name: script: extra: derivation ({
    inherit name;
    system = builtins.currentSystem;
    builder = bb;
    args = [ "sh" "-c" script ];
  } // extra);
  third = bytes / 3;

  dataPath = i:
    let kids = builtins.filter (k: k < count) [ (2 * i + 1) (2 * i + 2) ];
    in mk "nixlet-bench-${tag}-${toString i}" ''
      set -e
      ${bb} mkdir -p $out/share/doc
      ${bb} head -c ${toString third} /dev/urandom > $out/share/random.bin
      ${bb} head -c ${toString (third / 3)} /dev/urandom | ${bb} od -An -tx1 -v > $out/share/hex.txt
      ${bb} seq 1 1000000000 | ${bb} head -c ${toString third} \
        | ${bb} awk -v d=$out/share/doc '{ f = d "/part" int(NR / 1000); print > f; if (NR % 1000 == 999) close(f) }'
      ${bb} echo ${builtins.concatStringsSep " " (map (k: "${builtins.elemAt data k}") kids)} > $out/share/deps
    '' { };
  data = builtins.genList dataPath count;

  tiny = builtins.genList (i: mk "nixlet-bench-${tag}-${toString i}" ''
    ${bb} mkdir -p $out/share
    ${bb} echo "tiny path ${toString i}" > $out/share/tiny
  '' { }) (count - 1);
  mounts = mk "nixlet-bench-${tag}-root" ''
    set -e
    ${bb} mkdir -p $out/bin
    ${bb} cp ${bb} $out/bin/busybox
    ${bb} cp $depsPath $out/deps
  '' {
    # Thousands of store paths exceed the kernel's limit for one argument; a file does not.
    deps = builtins.concatStringsSep "\n" tiny;
    passAsFile = [ "deps" ];
  };
  app = mk "nixlet-bench-${tag}-app" ''
    set -e
    ${bb} mkdir -p $out/bin
    ${bb} cp ${bb} $out/bin/busybox
    ${bb} echo ${builtins.elemAt data 0} > $out/deps
  '' { };
  variant = v: mk "nixlet-bench-${tag}-variant-${toString v}" ''
    set -e
    ${bb} mkdir -p $out/bin $out/share
    ${bb} cp ${bb} $out/bin/busybox
    ${bb} head -c 5000000 /dev/urandom > $out/share/unique.bin
    ${bb} echo ${builtins.elemAt data 0} > $out/deps
  '' { };
  variants = mk "nixlet-bench-${tag}-variants" ''
    ${bb} echo ${builtins.concatStringsSep " " (builtins.genList variant variantCount)} > $out
  '' { };
in
{
  data = builtins.elemAt data 0;
  inherit app mounts variants;
}
