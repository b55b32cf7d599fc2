# Store paths for the end-to-end tests, built without nixpkgs: every builder is a static busybox.
# `tag` goes into the data file, so each tag yields different data and hello paths.
#
# busybox picks its applet from the basename of argv[0], and Nix runs a builder with argv[0] =
# the builder's base name. A store path's base name starts with its hash, so the binary is
# imported inside a directory and run as `<dir>/busybox`.
{ busyboxSrc, tag ? "default" }:
let
  system = builtins.currentSystem;
  raw = builtins.path { path = busyboxSrc; name = "nixlet-test-busybox-src"; };
  mk = name: script: derivation {
    inherit name system;
    builder = "${raw}/busybox";
    args = [ "sh" "-c" script ];
  };

  # The runtime busybox: what hello's shebang points to, so it is in hello's closure.
  busybox = mk "nixlet-test-busybox" ''
    set -e
    ${raw}/busybox mkdir -p $out/bin
    ${raw}/busybox cp ${raw}/busybox $out/bin/busybox
  '';
  bb = "${busybox}/bin/busybox";

  data = mk "nixlet-test-data" ''
    set -e
    ${bb} mkdir -p $out/share
    ${bb} echo "nixlet test data (${tag})" > $out/share/message
  '';

  hello = mk "nixlet-test-hello" ''
    set -e
    ${bb} mkdir -p $out/bin
    ${bb} printf '#!${bb} sh\n${bb} cat ${data}/share/message\n${bb} echo "hello from nixlet-test-hello"\n' > $out/bin/hello
    ${bb} chmod 0555 $out/bin/hello
  '';
in
{ inherit busybox data hello; }
