//! The environment's bill of materials is in the view: a container of a nixlet pod reads it at
//! `$NIXLET_ENV/share/nixlet/sbom.cdx.json`, and it lists exactly the closure it mounts.

use std::collections::BTreeSet;

use anyhow::{ensure, Context};
use nixlet_e2e::containerd_config::NIXLET_HANDLER;
use nixlet_e2e::cri::ContainerSpec;
use nixlet_e2e::images::EMPTY_IMAGE;
use nixlet_e2e::node::TestNode;
use nixlet_e2e::node_config::manifest;
use serde_json::Value;

#[test]
fn the_sbom_is_readable_in_the_pod_and_lists_the_closure() {
    TestNode::run_test(
        "the_sbom_is_readable_in_the_pod_and_lists_the_closure",
        |node| {
            let fixture = node.fixture("sbom-in-pod")?;
            node.publish("acme/sbom", 1, &manifest(&[("hello", &fixture.hello)], &[]))?;
            let cri = node.cri();
            let pod = cri.run_pod(
                &node
                    .pod("sbom", NIXLET_HANDLER)
                    .annotation("nixlet.dev/environment", "acme/sbom"),
            )?;
            let spec = ContainerSpec::new("cat-sbom", EMPTY_IMAGE).command(&[
                &fixture.busybox_bin(),
                "sh",
                "-c",
                "cat \"$NIXLET_ENV/share/nixlet/sbom.cdx.json\"",
            ]);
            let (code, out) = cri.run_to_exit(&pod, &spec)?;
            ensure!(code == 0, "cat exited with {code}: {out}");
            let doc: Value = serde_json::from_str(&out).context("the sbom is json")?;
            assert_eq!(doc["bomFormat"], "CycloneDX");
            assert_eq!(doc["specVersion"], "1.5");
            assert_eq!(doc["metadata"]["component"]["bom-ref"], "acme/sbom:1");
            let refs: BTreeSet<String> = doc["components"]
                .as_array()
                .context("components")?
                .iter()
                .filter_map(|c| c["bom-ref"].as_str().map(str::to_string))
                .collect();
            assert_eq!(refs, fixture.hello_closure());
            Ok(())
        },
    );
}
