//! The leak census must see what a running pod holds on the node (else "no leak" would mean
//! nothing): its shims, its rootfs mount, its shim sockets, its GC root and store tree; and
//! none of it once the pod is removed and `nixlet gc` ran. Needs root, containerd, runc and
//! Nix; without them it prints why and passes, except under `CI=true`.

use nixlet_e2e::containerd_config::NIXLET_HANDLER;
use nixlet_e2e::http_server::HttpServer;
use nixlet_reliability::kubelet;
use nixlet_reliability::rel_node::{NodeOptions, RelNode};
use nixlet_reliability::remote_envs::CacheSet;

#[test]
fn the_census_sees_a_running_pod_and_nothing_once_it_is_gone() {
    if !nixlet_e2e::prereq::ready("the_census_sees_a_running_pod_and_nothing_once_it_is_gone") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let set = CacheSet::build(
        work.path(),
        &format!("relcensus{}", std::process::id()),
        1,
        "zstd",
    )
    .unwrap();
    let node = RelNode::start(
        "the_census_sees_a_running_pod",
        NodeOptions {
            agent: true,
            ..Default::default()
        },
    )
    .unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        set.publish(&node).unwrap();
        let server = HttpServer::start(&set.dir).unwrap();
        node.set_substituters(&set.substituter(&server.url()))
            .unwrap();
        let before = node.settled_census();
        let spec = node
            .node
            .pod("census", NIXLET_HANDLER)
            .annotation("nixlet.dev/environment", &set.envs[0].reference);
        kubelet::start_pod(node.ids(), node.node.cri(), &spec).unwrap();
        let running = node.census();
        let seen = running.leaks_since(&before);
        for kind in [
            "process: ",
            "mount: ",
            "socket: ",
            "gc root: ",
            "store tree: ",
        ] {
            assert!(
                seen.iter().any(|l| l.starts_with(kind)),
                "a running pod's {kind:?} is not seen: {seen:#?}"
            );
        }
        assert!(running.agent_fds.is_some() && running.agent_rss_kib.is_some());
        assert!(node.remove_all_pods().failed.is_empty());
        let _ = node.settled_census();
        node.nixlet_gc().unwrap();
        let after = node.settled_census();
        assert_eq!(after.leaks_since(&before), Vec::<String>::new());
    }));
    let teardown = node.finish();
    let left = set.cleanup();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    assert!(teardown.is_empty(), "{teardown:?}");
    assert!(left.is_empty(), "{left:?}");
}
