# A closure for the fetch tests, built without nixpkgs, every path named after `tag` (so a test
# can delete all of it from the host store and have nixlet fetch it back) and chained so that a
# failure of the bottom path stops the others: tool -> data -> busybox, tool -> busybox.
{ busyboxSrc, tag }:
let
  system = builtins.currentSystem;
  raw = builtins.path { path = busyboxSrc; name = "nixlet-test-busybox-src"; };
  mk = name: script: derivation {
    inherit system;
    name = "nixlet-fetch-${tag}-${name}";
    builder = "${raw}/busybox";
    args = [ "sh" "-c" script ];
  };
  busybox = mk "busybox" ''
    set -e
    ${raw}/busybox mkdir -p $out/bin
    ${raw}/busybox cp ${raw}/busybox $out/bin/busybox
  '';
  bb = "${busybox}/bin/busybox";
  data = mk "data" ''
    set -e
    ${bb} mkdir -p $out/share
    ${bb} echo "fetched data (${tag}), read with ${bb}" > $out/share/message
  '';
  tool = mk "tool" ''
    set -e
    ${bb} mkdir -p $out/bin
    ${bb} printf '#!${bb} sh\n${bb} cat ${data}/share/message\n' > $out/bin/fetched-tool
    ${bb} chmod 0555 $out/bin/fetched-tool
  '';
in
{ inherit busybox data tool; }
