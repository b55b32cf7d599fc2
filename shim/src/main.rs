use containerd_shim::Config;
use nixlet_config::{NodeConfig, DEFAULT_LOG_LEVEL};
use nixlet_shim::shim::{NixletShim, RUNTIME_ID};

#[tokio::main]
async fn main() {
    // The shim library writes `tracing`'s lines (through `log`) to containerd's shim log at this
    // level; containerd's `-debug` raises it to debug, and `RUST_LOG` overrides both. A node
    // config that does not parse still gets a shim that logs (Create reports the config error).
    let log_level = NodeConfig::load()
        .map(|config| config.log_level)
        .unwrap_or_else(|_| DEFAULT_LOG_LEVEL.to_string());
    // nixlet starts no container processes itself (the runc shim does), so it needs neither a
    // reaper nor to be a subreaper; a reaper would also steal the exit status of the runc shim's
    // `start`/`delete` that nixlet runs and waits for.
    let config = Config {
        no_reaper: true,
        no_sub_reaper: true,
        default_log_level: log_level,
        ..Config::default()
    };
    containerd_shim::asynchronous::run::<NixletShim>(RUNTIME_ID, Some(config)).await;
}
