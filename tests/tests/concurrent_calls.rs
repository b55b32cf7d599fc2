//! Calls that reach the runc shim at the same time, as a kubelet makes them (probes, `kubectl
//! exec`, status, a container's long `Wait`), all get their answer. Every ExecSync is four task
//! RPCs through nixlet to the runc shim (Exec, Start, Wait, Delete); running many at once puts
//! them on the runc shim's ttrpc server together. The Go ttrpc server of containerd 1.7 and 2.x
//! refuses a request whose stream id is below an earlier one on its connection; when nixlet sent
//! overlapping calls on one connection, some reached the wire out of order and were refused,
//! which containerd took for a dead task (exit status 255, "cannot exec in a stopped state").

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use k8s_cri::v1::ContainerState;
use nixlet_e2e::containerd_config::NIXLET_HANDLER;
use nixlet_e2e::nix_fixture::expected_hello_output;
use nixlet_e2e::node::TestNode;

const ENVIRONMENT: &str = "nixlet.dev/environment";
const TAG: &str = "concurrent-calls";
/// Callers at once, and ExecSyncs each: before the fix, on containerd 2.1.9, 3 of 4 runs of
/// 16 x 30 lost calls (and 2 of 4 runs of 8 x 12).
const CALLERS: usize = 16;
const EXECS_PER_CALLER: usize = 40;

#[test]
fn overlapping_execs_into_a_nixlet_container_all_answer() {
    TestNode::run_test(
        "overlapping_execs_into_a_nixlet_container_all_answer",
        |node| {
            let fixture = node.publish_hello("acme/hello", TAG)?;
            let cri = node.cri();
            let pod = cri.run_pod(
                &node
                    .pod("concurrent", NIXLET_HANDLER)
                    .annotation(ENVIRONMENT, "acme/hello"),
            )?;
            let id = cri.run_container(&pod, &fixture.sleeper("server"))?;

            let outcomes: Vec<Result<()>> = std::thread::scope(|scope| {
                let callers: Vec<_> = (0..CALLERS)
                    .map(|caller| {
                        let id = &id;
                        scope.spawn(move || -> Result<()> {
                            for round in 0..EXECS_PER_CALLER {
                                let exec = cri
                                    .exec_sync(id, &["hello"])
                                    .with_context(|| format!("caller {caller}, exec {round}"))?;
                                ensure!(
                                    exec.exit_code == 0
                                        && exec.stdout == expected_hello_output(TAG),
                                    "caller {caller}, exec {round}: exit {} stdout {:?} \
                                     stderr {:?}",
                                    exec.exit_code,
                                    exec.stdout,
                                    exec.stderr
                                );
                            }
                            Ok(())
                        })
                    })
                    .collect();
                callers
                    .into_iter()
                    .map(|caller| caller.join().expect("caller thread panicked"))
                    .collect()
            });
            let failures: Vec<String> = outcomes
                .into_iter()
                .filter_map(Result::err)
                .map(|error| format!("{error:#}"))
                .collect();
            ensure!(
                failures.is_empty(),
                "{} of {CALLERS} callers lost an exec: {failures:#?}",
                failures.len()
            );

            // The container itself was never taken for dead.
            std::thread::sleep(Duration::from_millis(200));
            let status = cri.container_status(&id)?;
            ensure!(
                status.state == ContainerState::ContainerRunning as i32,
                "the container is no longer running after the execs: {status:?}"
            );
            cri.stop_and_remove_pod(&pod.id)?;
            Ok(())
        },
    );
}
