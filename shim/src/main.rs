use containerd_shim::Config;
use nixlet_shim::shim::{NixletShim, RUNTIME_ID};

#[tokio::main]
async fn main() {
    // nixlet starts no container processes itself (the runc shim does), so it needs neither a
    // reaper nor to be a subreaper; a reaper would also steal the exit status of the runc shim's
    // `start`/`delete` that nixlet runs and waits for.
    let config = Config {
        no_reaper: true,
        no_sub_reaper: true,
        ..Config::default()
    };
    containerd_shim::asynchronous::run::<NixletShim>(RUNTIME_ID, Some(config)).await;
}
