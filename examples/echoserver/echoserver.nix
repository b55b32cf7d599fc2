# The echoserver as a Nix store path, without nixpkgs: a static busybox is the builder, and the
# output links `sh` to it so `kubectl exec` has a shell. Closure: echoserver + busybox.
{ binary, busyboxDir }:
let
  busybox = builtins.path { path = busyboxDir; name = "busybox-static"; };
  bin = builtins.path { path = binary; name = "echoserver-static"; };
in
derivation {
  name = "echoserver-0.1.0";
  system = builtins.currentSystem;
  builder = "${busybox}/busybox";
  args = [ "sh" "-c" ''
    set -e
    ${busybox}/busybox mkdir -p $out/bin
    ${busybox}/busybox cp ${bin} $out/bin/echoserver
    ${busybox}/busybox chmod 0555 $out/bin/echoserver
    for applet in sh ls cat env wget; do
      ${busybox}/busybox ln -s ${busybox}/busybox $out/bin/$applet
    done
  '' ];
}
