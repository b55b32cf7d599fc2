use std::io::Write;

use containerd_shim::Config;
use nixlet_config::{NodeConfig, DEFAULT_LOG_LEVEL};
use nixlet_shim::shim::{NixletShim, RUNTIME_ID};

#[tokio::main]
async fn main() {
    let args: Vec<_> = std::env::args_os().collect();
    let flags = match containerd_shim::parse(&args[1..]) {
        Ok(flags) => flags,
        Err(error) => exit_with(format!("nixlet: {error}")),
    };
    // `start` and `-info` answer on stdout in a form that depends on the containerd version;
    // nixlet runs them itself. Their errors go to stderr, which containerd quotes.
    if flags.info {
        match nixlet_shim::info::run().await {
            Ok(info) => print_answer(&info),
            Err(error) => exit_with(format!("nixlet: -info: {error}")),
        }
    }
    if flags.action == "start" {
        match nixlet_shim::start::run(&flags).await {
            Ok(answer) => print_answer(&answer),
            Err(error) => exit_with(format!("nixlet: {error}")),
        }
    }

    // The shim library writes `tracing`'s lines (through `log`) to containerd's shim log at this
    // level; containerd's `-debug` raises it to debug, and `RUST_LOG` overrides both. A node
    // config that does not parse still gets a shim that logs (Create reports the config error).
    let log_level = NodeConfig::load()
        .map(|config| config.log_level)
        .unwrap_or_else(|_| DEFAULT_LOG_LEVEL.to_string());
    // nixlet starts no container processes itself (the runc shim does), so it needs neither a
    // reaper nor to be a subreaper; a reaper would also steal the exit status of the runc shim's
    // `delete` that nixlet runs and waits for.
    let config = Config {
        no_reaper: true,
        no_sub_reaper: true,
        default_log_level: log_level,
        ..Config::default()
    };
    containerd_shim::asynchronous::run::<NixletShim>(RUNTIME_ID, Some(config)).await;
}

fn print_answer(bytes: &[u8]) -> ! {
    let mut stdout = std::io::stdout();
    if let Err(error) = stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        exit_with(format!("nixlet: write answer: {error}"));
    }
    std::process::exit(0);
}

fn exit_with(message: String) -> ! {
    eprintln!("{message}");
    std::process::exit(1);
}
