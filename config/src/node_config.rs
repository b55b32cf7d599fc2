//! Node configuration: `/etc/nixlet/config.toml`, or the file named by `NIXLET_CONFIG`.
//!
//! The file is parsed strictly (unknown keys are errors) and validated into runtime types before
//! anything acts on it. A missing file means defaults: a node without nixlet environments still
//! runs every container that does not ask for one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nixlet_manifest::{DirSource, EnvironmentSource, HttpSource, HttpSourceOptions};
use nixlet_store::{FetchOptions, GcOptions, SubstituterConfig, INSTALL_RECORD_FILE};
use serde::Deserialize;

use crate::runtime::{RuntimeConfig, RuntimeSection};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/nixlet/config.toml";
pub const CONFIG_PATH_ENV: &str = "NIXLET_CONFIG";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/nixlet";
/// One GC root per running nixlet container lives here (see the shim's `gc_root`).
pub const DEFAULT_GC_ROOTS_DIR: &str = "/nix/var/nix/gcroots/nixlet";
pub const DEFAULT_NIX_GCROOTS_DIR: &str = "/nix/var/nix/gcroots";
/// Paths used within this long are kept by GC: the shim roots a closure only after fetching it.
pub const DEFAULT_GC_GRACE_SECS: u64 = 600;
/// Where `nixlet node run` serves `/metrics`: the port OpenTelemetry's Prometheus exporter uses,
/// so it does not collide with the kubelet's or node-exporter's.
pub const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:9464";
pub const DEFAULT_LOG_LEVEL: &str = "info";
const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("node config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("node config {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("node config {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Nix system of this node (`x86_64-linux`): only packages for it count.
    pub system: String,
    pub nix_db: PathBuf,
    /// Where each rewritten container's GC root lives, from Create until Delete.
    pub gc_roots_dir: PathBuf,
    pub runtime: RuntimeConfig,
    pub sources: Vec<SourceConfig>,
    /// Binary caches missing store paths are fetched from, tried in priority order.
    pub substituters: Vec<SubstituterConfig>,
    pub fetch: FetchSettings,
    /// nixlet's own state: the record of the store paths it installed, for `nixlet gc`.
    pub state_dir: PathBuf,
    pub gc: GcSettings,
    /// `[metrics]`: where `nixlet node run` serves Prometheus metrics; `None` when disabled.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `[log] level`: the shim's log level (containerd's `-debug` raises it to debug).
    pub log_level: String,
    pub mounts: MountSettings,
}

/// `[mounts]`: how a container's closure appears at `/nix/store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSettings {
    pub strategy: MountStrategy,
    /// Where per-environment store trees live; must be on the store's filesystem and mount
    /// (hard links cannot cross either), else containers fall back to per-path mounts.
    pub trees_dir: PathBuf,
}

impl Default for MountSettings {
    fn default() -> Self {
        MountSettings {
            strategy: MountStrategy::Tree,
            trees_dir: PathBuf::from(nixlet_store::store_tree::DEFAULT_TREES_DIR),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MountStrategy {
    /// One read-only bind of the environment's store tree on `/nix/store`: the cost of a start
    /// does not grow with the closure.
    Tree,
    /// One read-only bind per closure path: no tree on disk, but runc's mount work grows with
    /// the closure (about 0.7 ms per path measured).
    PerPath,
}

/// `[gc]`: how `nixlet gc` (and `nixlet node run`, periodically) keeps the store in bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcSettings {
    /// Collect until the store (sum of NarSize of valid paths) is at most this.
    pub max_store_bytes: Option<u64>,
    /// Collect until the store's filesystem has at least this much free.
    pub min_free_bytes: Option<u64>,
    /// How often `nixlet node run` collects; `None`: never on its own.
    pub interval_secs: Option<u64>,
    /// Paths used within this many seconds are kept.
    pub grace_secs: u64,
    /// The tree of GC roots honoured, as Nix's GC reads it; `gc_roots_dir` must lie inside.
    pub gcroots_dir: PathBuf,
}

impl Default for GcSettings {
    fn default() -> Self {
        GcSettings {
            max_store_bytes: None,
            min_free_bytes: None,
            interval_secs: None,
            grace_secs: DEFAULT_GC_GRACE_SECS,
            gcroots_dir: PathBuf::from(DEFAULT_NIX_GCROOTS_DIR),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSettings {
    /// Accept only paths signed by a trusted key (unsigned content-addressed paths are otherwise
    /// accepted when their address checks out against the bytes).
    pub require_signatures: bool,
    pub parallel_downloads: usize,
    /// How long a connection to a cache may take.
    pub connect_timeout_secs: u64,
    /// Whole-request limit for `nix-cache-info` and narinfo.
    pub request_timeout_secs: u64,
    /// How long a NAR download may go without a byte, and the window its speed is judged over.
    pub read_timeout_secs: u64,
    /// A NAR download slower than this over a whole read window fails (a trickling server).
    pub min_bytes_per_sec: u64,
    /// Tries per request on transient failures (5xx, resets, timeouts).
    pub attempts: u32,
}

impl Default for FetchSettings {
    fn default() -> Self {
        let defaults = FetchOptions::default();
        FetchSettings {
            require_signatures: defaults.require_signatures,
            parallel_downloads: defaults.parallel_downloads,
            connect_timeout_secs: defaults.connect_timeout.as_secs(),
            request_timeout_secs: defaults.request_timeout.as_secs(),
            read_timeout_secs: defaults.read_timeout.as_secs(),
            min_bytes_per_sec: defaults.min_bytes_per_sec,
            attempts: defaults.attempts,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    Dir {
        root: PathBuf,
    },
    /// The `dir` layout below a base URL; a bearer token file or a netrc file (not both)
    /// authenticates it.
    Http {
        url: String,
        token_file: Option<PathBuf>,
        netrc_file: Option<PathBuf>,
        /// Per request; nixlet's default when absent.
        timeout_secs: Option<u64>,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    system: Option<String>,
    nix_db: Option<PathBuf>,
    gc_roots_dir: Option<PathBuf>,
    #[serde(default)]
    runtime: RuntimeSection,
    #[serde(default)]
    sources: Vec<SourceConfig>,
    #[serde(default)]
    substituters: Vec<SubstituterConfig>,
    #[serde(default)]
    fetch: FetchSection,
    state_dir: Option<PathBuf>,
    #[serde(default)]
    gc: GcSection,
    #[serde(default)]
    metrics: MetricsSection,
    #[serde(default)]
    log: LogSection,
    #[serde(default)]
    mounts: MountsSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsSection {
    /// `false` turns the listener off.
    enabled: Option<bool>,
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSection {
    level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MountsSection {
    strategy: Option<MountStrategy>,
    trees_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GcSection {
    max_store_bytes: Option<u64>,
    min_free_bytes: Option<u64>,
    interval_secs: Option<u64>,
    grace_secs: Option<u64>,
    gcroots_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchSection {
    require_signatures: Option<bool>,
    parallel_downloads: Option<usize>,
    connect_timeout_secs: Option<u64>,
    request_timeout_secs: Option<u64>,
    read_timeout_secs: Option<u64>,
    min_bytes_per_sec: Option<u64>,
    attempts: Option<u32>,
}

/// `[fetch]` over the defaults; a timeout or a number of attempts of 0 would make every fetch
/// fail (or, for reqwest, mean "no limit"), so they are refused naming the key.
fn fetch_settings(
    section: &FetchSection,
    defaults: &FetchSettings,
) -> Result<FetchSettings, String> {
    let settings = FetchSettings {
        require_signatures: section
            .require_signatures
            .unwrap_or(defaults.require_signatures),
        parallel_downloads: section
            .parallel_downloads
            .unwrap_or(defaults.parallel_downloads),
        connect_timeout_secs: section
            .connect_timeout_secs
            .unwrap_or(defaults.connect_timeout_secs),
        request_timeout_secs: section
            .request_timeout_secs
            .unwrap_or(defaults.request_timeout_secs),
        read_timeout_secs: section
            .read_timeout_secs
            .unwrap_or(defaults.read_timeout_secs),
        min_bytes_per_sec: section
            .min_bytes_per_sec
            .unwrap_or(defaults.min_bytes_per_sec),
        attempts: section.attempts.unwrap_or(defaults.attempts),
    };
    for (key, value) in [
        ("connect_timeout_secs", settings.connect_timeout_secs),
        ("request_timeout_secs", settings.request_timeout_secs),
        ("read_timeout_secs", settings.read_timeout_secs),
        ("attempts", u64::from(settings.attempts)),
    ] {
        if value == 0 {
            return Err(format!("fetch {key} must be at least 1"));
        }
    }
    Ok(settings)
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            system: native_system(),
            nix_db: PathBuf::from(nixlet_store::DEFAULT_NIX_DB),
            gc_roots_dir: PathBuf::from(DEFAULT_GC_ROOTS_DIR),
            runtime: RuntimeConfig::default(),
            sources: Vec::new(),
            substituters: Vec::new(),
            fetch: FetchSettings::default(),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            gc: GcSettings::default(),
            metrics_listen: Some(DEFAULT_METRICS_LISTEN.parse().expect("a socket address")),
            log_level: DEFAULT_LOG_LEVEL.to_string(),
            mounts: MountSettings::default(),
        }
    }
}

/// The Nix system name of the machine this binary was built for.
pub fn native_system() -> String {
    format!("{}-linux", std::env::consts::ARCH)
}

impl NodeConfig {
    /// The path in force: `NIXLET_CONFIG` if set, else the default.
    pub fn path_in_force() -> PathBuf {
        std::env::var_os(CONFIG_PATH_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
    }

    pub fn load() -> Result<NodeConfig, ConfigError> {
        Self::load_from(&Self::path_in_force())
    }

    pub fn load_from(path: &Path) -> Result<NodeConfig, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(NodeConfig::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    pub fn parse(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let defaults = NodeConfig::default();
        for source in &file.sources {
            check_source(source).map_err(invalid)?;
        }
        let runtime = file.runtime.validate().map_err(invalid)?;
        let gc = GcSettings {
            max_store_bytes: file.gc.max_store_bytes,
            min_free_bytes: file.gc.min_free_bytes,
            interval_secs: file.gc.interval_secs,
            grace_secs: file.gc.grace_secs.unwrap_or(defaults.gc.grace_secs),
            gcroots_dir: file.gc.gcroots_dir.unwrap_or(defaults.gc.gcroots_dir),
        };
        if gc.interval_secs == Some(0) {
            return Err(invalid("gc interval_secs must be at least 1".into()));
        }
        let gc_roots_dir = file.gc_roots_dir.unwrap_or(defaults.gc_roots_dir);
        if !gc_roots_dir.starts_with(&gc.gcroots_dir) {
            return Err(invalid(format!(
                "gc_roots_dir {:?} is outside gc.gcroots_dir {:?}: GC would not see the \
                 containers' roots",
                gc_roots_dir.display().to_string(),
                gc.gcroots_dir.display().to_string()
            )));
        }
        let state_dir = file.state_dir.unwrap_or(defaults.state_dir);
        if !state_dir.is_absolute() || !gc.gcroots_dir.is_absolute() {
            return Err(invalid(format!(
                "state_dir {:?} and gc.gcroots_dir {:?} must be absolute paths",
                state_dir.display().to_string(),
                gc.gcroots_dir.display().to_string()
            )));
        }
        let metrics_listen = match (file.metrics.enabled, file.metrics.listen) {
            (Some(false), _) => None,
            (_, None) => defaults.metrics_listen,
            (_, Some(listen)) => Some(listen.parse().map_err(|_| {
                invalid(format!(
                    "metrics listen {listen:?} is not an address and port like \"0.0.0.0:9464\""
                ))
            })?),
        };
        let log_level = match file.log.level {
            None => defaults.log_level,
            Some(level) if LOG_LEVELS.contains(&level.as_str()) => level,
            Some(level) => {
                return Err(invalid(format!(
                    "log level {level:?} is not one of {}",
                    LOG_LEVELS.join(", ")
                )))
            }
        };
        let fetch = fetch_settings(&file.fetch, &defaults.fetch).map_err(invalid)?;
        let mounts = MountSettings {
            strategy: file.mounts.strategy.unwrap_or(defaults.mounts.strategy),
            trees_dir: file.mounts.trees_dir.unwrap_or(defaults.mounts.trees_dir),
        };
        if !mounts.trees_dir.is_absolute() {
            return Err(invalid(format!(
                "mounts trees_dir {:?} must be an absolute path",
                mounts.trees_dir.display().to_string()
            )));
        }
        Ok(NodeConfig {
            metrics_listen,
            log_level,
            system: file.system.unwrap_or(defaults.system),
            nix_db: file.nix_db.unwrap_or(defaults.nix_db),
            gc_roots_dir,
            runtime,
            sources: file.sources,
            substituters: file.substituters,
            fetch,
            state_dir,
            gc,
            mounts,
        })
    }

    /// The fetcher's options for this node: its database and the `[fetch]` settings.
    pub fn fetch_options(&self) -> FetchOptions {
        FetchOptions {
            require_signatures: self.fetch.require_signatures,
            parallel_downloads: self.fetch.parallel_downloads,
            nix_db: self.nix_db.clone(),
            install_record: Some(self.install_record()),
            connect_timeout: Duration::from_secs(self.fetch.connect_timeout_secs),
            request_timeout: Duration::from_secs(self.fetch.request_timeout_secs),
            read_timeout: Duration::from_secs(self.fetch.read_timeout_secs),
            min_bytes_per_sec: self.fetch.min_bytes_per_sec,
            attempts: self.fetch.attempts,
            ..FetchOptions::default()
        }
    }

    /// Where shims leave their Create records for `nixlet node run` (nixlet-telemetry).
    pub fn telemetry_dir(&self) -> PathBuf {
        self.state_dir.join(nixlet_telemetry::TELEMETRY_DIR)
    }

    /// nixlet's record of the store paths it installed.
    pub fn install_record(&self) -> PathBuf {
        self.state_dir.join(INSTALL_RECORD_FILE)
    }

    /// `nixlet gc` for this node: the `[gc]` limits, the roots and the install record.
    pub fn gc_options(&self, dry_run: bool) -> GcOptions {
        GcOptions {
            nix_db: self.nix_db.clone(),
            nix_state_dir: FetchOptions::default().nix_state_dir,
            gcroots_dir: self.gc.gcroots_dir.clone(),
            install_record: self.install_record(),
            max_store_bytes: self.gc.max_store_bytes,
            min_free_bytes: self.gc.min_free_bytes,
            grace: std::time::Duration::from_secs(self.gc.grace_secs),
            trees_dir: Some(self.mounts.trees_dir.clone()),
            dry_run,
            batch_paths: nixlet_store::GC_BATCH,
        }
    }

    pub fn environment_sources(&self) -> Vec<Box<dyn EnvironmentSource>> {
        self.sources
            .iter()
            .map(|source| match source {
                SourceConfig::Dir { root } => {
                    Box::new(DirSource::new(root.clone())) as Box<dyn EnvironmentSource>
                }
                SourceConfig::Http {
                    url,
                    token_file,
                    netrc_file,
                    timeout_secs,
                } => {
                    let defaults = HttpSourceOptions::default();
                    let options = HttpSourceOptions {
                        token_file: token_file.clone(),
                        netrc_file: netrc_file.clone(),
                        timeout: timeout_secs
                            .map(std::time::Duration::from_secs)
                            .unwrap_or(defaults.timeout),
                        ..defaults
                    };
                    Box::new(HttpSource::new(url.clone(), options))
                }
            })
            .collect()
    }
}

/// What serde cannot check: absolute paths, a usable URL, one kind of credentials.
fn check_source(source: &SourceConfig) -> Result<(), String> {
    let absolute = |what: &str, path: &Path| {
        if path.is_absolute() {
            Ok(())
        } else {
            Err(format!(
                "{what} {:?} must be an absolute path",
                path.display().to_string()
            ))
        }
    };
    match source {
        SourceConfig::Dir { root } => absolute("source root", root),
        SourceConfig::Http {
            url,
            token_file,
            netrc_file,
            timeout_secs,
        } => {
            nixlet_manifest::validate_base_url(url).map_err(|error| error.to_string())?;
            if token_file.is_some() && netrc_file.is_some() {
                return Err(format!(
                    "http source {url:?} sets both token_file and netrc_file; choose one"
                ));
            }
            if let Some(path) = token_file {
                absolute("token_file", path)?;
            }
            if let Some(path) = netrc_file {
                absolute("netrc_file", path)?;
            }
            if *timeout_secs == Some(0) {
                return Err(format!(
                    "http source {url:?}: timeout_secs must be at least 1"
                ));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DEFAULT_DELEGATE_SHIM;

    fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        NodeConfig::parse(text, Path::new("/etc/nixlet/config.toml"))
    }

    #[test]
    fn full_config_parses_into_runtime_types() {
        let config = parse(
            r#"
            system = "aarch64-linux"
            nix_db = "/var/db.sqlite"
            [runtime]
            binary_name = "crun"
            [[sources]]
            kind = "dir"
            root = "/var/lib/nixlet/environments"
            "#,
        )
        .unwrap();
        assert_eq!(config.system, "aarch64-linux");
        assert_eq!(config.nix_db, PathBuf::from("/var/db.sqlite"));
        assert_eq!(config.runtime.binary_name(), Some("crun"));
        assert_eq!(config.runtime.delegate_shim, DEFAULT_DELEGATE_SHIM);
        assert_eq!(
            config.sources,
            vec![SourceConfig::Dir {
                root: "/var/lib/nixlet/environments".into()
            }]
        );
    }

    #[test]
    fn substituters_and_fetch_settings_parse() {
        let config = parse(
            r#"
            [fetch]
            require_signatures = false
            parallel_downloads = 4
            [[substituters]]
            url = "http://127.0.0.1:5000"
            trusted_keys = ["cache-1:AAAA"]
            priority = 10
            [[substituters]]
            url = "file:///srv/nix-cache"
            backend = "nix-cli"
            build_flakes = true
            "#,
        )
        .unwrap();
        assert_eq!(config.substituters.len(), 2);
        assert!(!config.substituters[0].build_flakes);
        assert!(config.substituters[1].build_flakes);
        assert_eq!(config.substituters[0].url, "http://127.0.0.1:5000");
        assert_eq!(config.substituters[0].priority, Some(10));
        let options = config.fetch_options();
        assert!(!options.require_signatures);
        assert_eq!(options.parallel_downloads, 4);
        assert!(NodeConfig::default().fetch_options().require_signatures);
    }

    #[test]
    fn fetch_limits_parse_and_zero_is_refused() {
        let config = parse(
            "[fetch]\nconnect_timeout_secs = 2\nrequest_timeout_secs = 3\nread_timeout_secs = 4\n\
             min_bytes_per_sec = 100\nattempts = 5\n",
        )
        .unwrap();
        let options = config.fetch_options();
        assert_eq!(options.connect_timeout, Duration::from_secs(2));
        assert_eq!(options.request_timeout, Duration::from_secs(3));
        assert_eq!(options.read_timeout, Duration::from_secs(4));
        assert_eq!(options.min_bytes_per_sec, 100);
        assert_eq!(options.attempts, 5);
        let defaults = NodeConfig::default().fetch_options();
        assert_eq!(defaults.read_timeout, FetchOptions::default().read_timeout);
        assert_eq!(defaults.attempts, FetchOptions::default().attempts);
        for key in ["connect_timeout_secs", "read_timeout_secs", "attempts"] {
            let error = parse(&format!("[fetch]\n{key} = 0\n")).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("node config /etc/nixlet/config.toml: fetch {key} must be at least 1")
            );
        }
    }

    #[test]
    fn gc_settings_and_state_dir_parse() {
        let config = parse(
            r#"
            state_dir = "/srv/nixlet"
            gc_roots_dir = "/srv/gcroots/nixlet"
            [gc]
            max_store_bytes = 21474836480
            min_free_bytes = 5368709120
            interval_secs = 3600
            grace_secs = 0
            gcroots_dir = "/srv/gcroots"
            "#,
        )
        .unwrap();
        assert_eq!(
            config.gc,
            GcSettings {
                max_store_bytes: Some(21_474_836_480),
                min_free_bytes: Some(5_368_709_120),
                interval_secs: Some(3600),
                grace_secs: 0,
                gcroots_dir: "/srv/gcroots".into(),
            }
        );
        assert_eq!(
            config.fetch_options().install_record,
            Some(PathBuf::from("/srv/nixlet/installed-paths.sqlite"))
        );
        let gc = config.gc_options(true);
        assert_eq!(gc.gcroots_dir, PathBuf::from("/srv/gcroots"));
        assert_eq!(gc.max_store_bytes, Some(21_474_836_480));
        assert!(gc.dry_run);

        let defaults = NodeConfig::default();
        assert_eq!(defaults.gc.interval_secs, None);
        assert_eq!(defaults.gc.grace_secs, DEFAULT_GC_GRACE_SECS);
        assert_eq!(
            defaults.install_record(),
            PathBuf::from("/var/lib/nixlet/installed-paths.sqlite")
        );

        let outside = parse("[gc]\ngcroots_dir = \"/srv/gcroots\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            outside,
            "node config /etc/nixlet/config.toml: gc_roots_dir \"/nix/var/nix/gcroots/nixlet\" \
             is outside gc.gcroots_dir \"/srv/gcroots\": GC would not see the containers' roots"
        );
        assert!(parse("[gc]\ninterval_secs = 0\n").is_err());
        assert!(parse("[gc]\nmax_store_bytes = -1\n").is_err());
        let unknown = parse("[gc]\nbudget = 1\n").unwrap_err().to_string();
        assert!(unknown.contains("unknown field `budget`"), "{unknown}");
    }

    #[test]
    fn metrics_and_log_sections_parse() {
        let defaults = NodeConfig::default();
        assert_eq!(
            defaults.metrics_listen,
            Some("0.0.0.0:9464".parse().unwrap())
        );
        assert_eq!(defaults.log_level, "info");
        assert_eq!(
            defaults.telemetry_dir(),
            PathBuf::from("/var/lib/nixlet/telemetry")
        );
        let config =
            parse("[metrics]\nlisten = \"127.0.0.1:9999\"\n[log]\nlevel = \"debug\"\n").unwrap();
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9999".parse().unwrap())
        );
        assert_eq!(config.log_level, "debug");
        assert_eq!(
            parse("[metrics]\nenabled = false\n")
                .unwrap()
                .metrics_listen,
            None
        );
        assert_eq!(
            parse("[metrics]\nlisten = \"9464\"\n")
                .unwrap_err()
                .to_string(),
            "node config /etc/nixlet/config.toml: metrics listen \"9464\" is not an address and \
             port like \"0.0.0.0:9464\""
        );
        assert_eq!(
            parse("[log]\nlevel = \"loud\"\n").unwrap_err().to_string(),
            "node config /etc/nixlet/config.toml: log level \"loud\" is not one of error, warn, \
             info, debug, trace"
        );
    }

    #[test]
    fn mount_strategy_and_trees_dir_parse() {
        let config =
            parse("[mounts]\nstrategy = \"per-path\"\ntrees_dir = \"/nix/var/t\"\n").unwrap();
        assert_eq!(
            config.mounts,
            MountSettings {
                strategy: MountStrategy::PerPath,
                trees_dir: "/nix/var/t".into(),
            }
        );
        assert_eq!(
            config.gc_options(false).trees_dir,
            Some("/nix/var/t".into())
        );
        let defaults = NodeConfig::default().mounts;
        assert_eq!(defaults.strategy, MountStrategy::Tree);
        assert_eq!(defaults.trees_dir, PathBuf::from("/nix/var/nixlet/trees"));
        let unknown = parse("[mounts]\nstrategy = \"overlay\"\n")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("unknown variant `overlay`"), "{unknown}");
        let relative = parse("[mounts]\ntrees_dir = \"trees\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            relative,
            "node config /etc/nixlet/config.toml: mounts trees_dir \"trees\" must be an absolute path"
        );
    }

    #[test]
    fn empty_config_means_defaults() {
        assert_eq!(parse("").unwrap(), NodeConfig::default());
    }

    #[test]
    fn missing_file_means_defaults() {
        let config = NodeConfig::load_from(Path::new("/nonexistent/nixlet.toml")).unwrap();
        assert_eq!(config, NodeConfig::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let error = parse("sytem = \"x86_64-linux\"").unwrap_err().to_string();
        assert!(
            error.starts_with("node config /etc/nixlet/config.toml:"),
            "{error}"
        );
        assert!(error.contains("unknown field `sytem`"), "{error}");
    }

    #[test]
    fn unknown_source_kind_is_an_error() {
        let error = parse("[[sources]]\nkind = \"git\"\nroot = \"/x\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown variant `git`"), "{error}");
    }

    #[test]
    fn http_source_parses_with_its_options() {
        let config = parse(
            r#"
            [[sources]]
            kind = "http"
            url = "https://envs.example.com/nixlet"
            token_file = "/etc/nixlet/token"
            timeout_secs = 10
            [[sources]]
            kind = "http"
            url = "http://10.0.0.5:8080"
            netrc_file = "/etc/nixlet/netrc"
            [[sources]]
            kind = "dir"
            root = "/var/lib/nixlet/environments"
            "#,
        )
        .unwrap();
        assert_eq!(
            config.sources,
            vec![
                SourceConfig::Http {
                    url: "https://envs.example.com/nixlet".into(),
                    token_file: Some("/etc/nixlet/token".into()),
                    netrc_file: None,
                    timeout_secs: Some(10),
                },
                SourceConfig::Http {
                    url: "http://10.0.0.5:8080".into(),
                    token_file: None,
                    netrc_file: Some("/etc/nixlet/netrc".into()),
                    timeout_secs: None,
                },
                SourceConfig::Dir {
                    root: "/var/lib/nixlet/environments".into()
                },
            ]
        );
        let described: Vec<String> = config
            .environment_sources()
            .iter()
            .map(|source| source.describe())
            .collect();
        assert_eq!(
            described,
            vec![
                "http https://envs.example.com/nixlet",
                "http http://10.0.0.5:8080",
                "dir /var/lib/nixlet/environments"
            ]
        );
    }

    #[test]
    fn invalid_http_sources_are_rejected() {
        let error_of = |body: &str| {
            parse(&format!("[[sources]]\nkind = \"http\"\n{body}"))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            error_of("url = \"ftp://envs.example.com\""),
            "node config /etc/nixlet/config.toml: invalid http source url \
             \"ftp://envs.example.com\": only http and https are supported"
        );
        assert_eq!(
            error_of("url = \"https://e.example.com\"\ntoken_file = \"/t\"\nnetrc_file = \"/n\""),
            "node config /etc/nixlet/config.toml: http source \"https://e.example.com\" sets \
             both token_file and netrc_file; choose one"
        );
        assert_eq!(
            error_of("url = \"https://e.example.com\"\ntoken_file = \"token\""),
            "node config /etc/nixlet/config.toml: token_file \"token\" must be an absolute path"
        );
        assert_eq!(
            error_of("url = \"https://e.example.com\"\ntimeout_secs = 0"),
            "node config /etc/nixlet/config.toml: http source \"https://e.example.com\": \
             timeout_secs must be at least 1"
        );
        let unknown = error_of("url = \"https://e.example.com\"\ntoken = \"abc\"");
        assert!(unknown.contains("unknown field `token`"), "{unknown}");
    }

    #[test]
    fn relative_source_root_is_rejected() {
        let error = parse("[[sources]]\nkind = \"dir\"\nroot = \"envs\"")
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "node config /etc/nixlet/config.toml: source root \"envs\" must be an absolute path"
        );
    }
}
