# Packages for the environment tests, built without nixpkgs (builders are a static busybox):
# every derivation is named after `tag`, so each tag gives its own paths and a test may delete
# its own without touching another test's.
#
#   toolA, toolB  both install bin/tool (printing "tool from A" / "tool from B") and
#                 share/nixlet/common, plus a file of their own: a collision for priorities;
#   coreutils     busybox applet links (sh, cat, env, dirname, pwd, ls, …) to this tag's busybox;
#   bash          a static bash (Debian's bash-static), as bin/bash;
#   docs          share/man, share/info and etc/ssl/certs/ca-bundle.crt, so that MANPATH,
#                 INFOPATH and SSL_CERT_FILE get set;
#   library       propagates `buildDep` (nix-support/propagated-build-inputs, linked only into
#                 dev views, as Flox links it) and `userDep` (propagated-user-env-packages,
#                 linked into every view); each of those has a bin/ program naming itself.
{ busyboxSrc, bashSrc, tag }:
let
  system = builtins.currentSystem;
  raw = builtins.path { path = busyboxSrc; name = "nixlet-test-busybox-src"; };
  rawBash = builtins.path { path = bashSrc; name = "nixlet-test-bash-src"; };
  mk = name: script: derivation {
    inherit system;
    name = "nixlet-pkg-${tag}-${name}";
    builder = "${raw}/busybox";
    args = [ "sh" "-c" ''
      set -e
      ${raw}/busybox mkdir -p $TMPDIR/bin
      ${raw}/busybox --install -s $TMPDIR/bin
      export PATH=$TMPDIR/bin
      ${script}
    '' ];
  };

  busybox = mk "busybox" ''
    mkdir -p $out/bin
    cp ${raw}/busybox $out/bin/busybox
  '';
  bb = "${busybox}/bin/busybox";

  tool = which: mk "tool-${which}" ''
    mkdir -p $out/bin $out/share/nixlet
    printf '#!${bb} sh\necho "tool from ${which}"\n' > $out/bin/tool
    chmod 0555 $out/bin/tool
    echo "common file of ${which}" > $out/share/nixlet/common
    echo "own file of ${which}" > $out/share/nixlet/only-${which}
  '';

  coreutils = mk "coreutils" ''
    mkdir -p $out/bin
    for applet in sh cat env dirname pwd ls echo printf sleep test true false; do
      ln -s ${bb} $out/bin/$applet
    done
  '';

  bash = mk "bash" ''
    mkdir -p $out/bin
    cp ${rawBash}/bash $out/bin/bash
    chmod 0555 $out/bin/bash
  '';

  docs = mk "docs" ''
    mkdir -p $out/share/man/man1 $out/share/info $out/etc/ssl/certs
    echo ".TH TOOL 1" > $out/share/man/man1/tool.1
    echo "tool info" > $out/share/info/tool.info
    echo "not really a certificate (${tag})" > $out/etc/ssl/certs/ca-bundle.crt
  '';
  dep = which: mk which ''
    mkdir -p $out/bin $out/lib
    printf '#!${bb} sh\necho "${which} linked"\n' > $out/bin/${which}
    chmod 0555 $out/bin/${which}
    echo "${which}" > $out/lib/${which}.txt
  '';
  buildDep = dep "build-dep";
  userDep = dep "user-dep";

  library = mk "library" ''
    mkdir -p $out/include $out/nix-support
    echo "/* library */" > $out/include/library.h
    printf '%s\n' "${buildDep}" > $out/nix-support/propagated-build-inputs
    printf '%s' "${userDep}" > $out/nix-support/propagated-user-env-packages
  '';
in
{
  inherit busybox coreutils bash docs library buildDep userDep;
  toolA = tool "A";
  toolB = tool "B";
}
