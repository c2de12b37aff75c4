//! Cluster configuration, read the way Storm reads `storm.yaml`.
//!
//! A daemon's configuration is built in three layers, each overriding the one before:
//!
//! 1. the defaults in `defaults.yaml`, embedded in the binary ([`DEFAULTS_YAML`]);
//! 2. a YAML file (`--config storm.yaml`): a flat map of Storm's dotted key names to
//!    scalars, lists or maps;
//! 3. each `-c key=value` flag, whose value is read as YAML, so
//!    `-c supervisor.slots.ports=[6700,6701]` gives a list, `-c topology.workers=3` an
//!    integer and `-c storm.local.hostname=host1` a string.
//!
//! ```
//! use squall_cluster::config::{self, ClusterConfig};
//! let conf = config::load(None, &["storm.zookeeper.servers=[zk1, zk2]".to_string()]).unwrap();
//! assert_eq!(conf.zookeeper_connect_string().unwrap(), "zk1:2181,zk2:2181");
//! assert_eq!(conf.supervisor_slot_ports().unwrap(), vec![6700, 6701, 6702, 6703]);
//! ```
//!
//! The typed accessors of [`ClusterConfig`] fall back to the embedded defaults when a key
//! is missing (or `null`), and name the key when its value has the wrong type.
//!
//! Cluster keys are strict: a key in a file or a `-c` override must be one Squall reads
//! ([`is_known_key`]: every key of `defaults.yaml`, plus the few without a default such
//! as `storm.local.hostname` and `squall.secret.file`), so a typo is an error naming the
//! key, where it came from, and the closest known key. Keys starting with `topology.`
//! stay open: a topology's configuration may hold anything its components read.
//!
//! ```
//! use squall_cluster::config;
//! let e = config::load(None, &["supervisor.slot.ports=[6700]".to_string()]).unwrap_err();
//! assert!(e.to_string().contains("did you mean 'supervisor.slots.ports'?"));
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use squall_api::{Config, ConfigError, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// Squall's default cluster configuration, as YAML with Storm's key names.
pub const DEFAULTS_YAML: &str = include_str!("defaults.yaml");

/// The cluster configuration keys Squall's daemons read (Storm's names).
pub mod keys {
    /// ZooKeeper hosts (a list, or one host as a string).
    pub const STORM_ZOOKEEPER_SERVERS: &str = "storm.zookeeper.servers";
    /// ZooKeeper client port of every server.
    pub const STORM_ZOOKEEPER_PORT: &str = "storm.zookeeper.port";
    /// ZooKeeper path under which the cluster state lives.
    pub const STORM_ZOOKEEPER_ROOT: &str = "storm.zookeeper.root";
    /// ZooKeeper session timeout in milliseconds.
    pub const STORM_ZOOKEEPER_SESSION_TIMEOUT: &str = "storm.zookeeper.session.timeout";
    /// Directory for the daemons' local state.
    pub const STORM_LOCAL_DIR: &str = "storm.local.dir";
    /// Hosts that may run Nimbus (a list, or one host as a string).
    pub const NIMBUS_SEEDS: &str = "nimbus.seeds";
    /// Nimbus RPC port.
    pub const NIMBUS_THRIFT_PORT: &str = "nimbus.thrift.port";
    /// Seconds between Nimbus's checks of heartbeats and assignments.
    pub const NIMBUS_MONITOR_FREQ_SECS: &str = "nimbus.monitor.freq.secs";
    /// Seconds without a supervisor heartbeat before Nimbus considers it dead.
    pub const NIMBUS_SUPERVISOR_TIMEOUT_SECS: &str = "nimbus.supervisor.timeout.secs";
    /// Seconds without an executor heartbeat before Nimbus reassigns it.
    pub const NIMBUS_TASK_TIMEOUT_SECS: &str = "nimbus.task.timeout.secs";
    /// Largest topology artifact Nimbus accepts, in bytes.
    pub const NIMBUS_BINARY_MAX_BYTES: &str = "nimbus.binary.max.bytes";
    /// Worker ports a supervisor offers.
    pub const SUPERVISOR_SLOTS_PORTS: &str = "supervisor.slots.ports";
    /// Seconds without a worker heartbeat before the supervisor restarts it.
    pub const SUPERVISOR_WORKER_TIMEOUT_SECS: &str = "supervisor.worker.timeout.secs";
    /// Seconds a new worker has to send its first heartbeat.
    pub const SUPERVISOR_WORKER_START_TIMEOUT_SECS: &str = "supervisor.worker.start.timeout.secs";
    /// Seconds between the supervisor's checks of its workers.
    pub const SUPERVISOR_MONITOR_FREQUENCY_SECS: &str = "supervisor.monitor.frequency.secs";
    /// Seconds between the supervisor's heartbeats.
    pub const SUPERVISOR_HEARTBEAT_FREQUENCY_SECS: &str = "supervisor.heartbeat.frequency.secs";
    /// Seconds between a worker's heartbeats.
    pub const WORKER_HEARTBEAT_FREQUENCY_SECS: &str = "worker.heartbeat.frequency.secs";
    /// Port of the web UI.
    pub const UI_PORT: &str = "ui.port";
    /// Address the web UI listens on.
    pub const UI_HOST: &str = "ui.host";
    /// Port of the logviewer.
    pub const LOGVIEWER_PORT: &str = "logviewer.port";
    /// Address the logviewer listens on.
    pub const LOGVIEWER_HOST: &str = "logviewer.host";
    /// Data directory of `squall dev-zookeeper`.
    pub const DEV_ZOOKEEPER_PATH: &str = "dev.zookeeper.path";
    /// The hostname this machine is reached by (default: the system's hostname).
    pub const STORM_LOCAL_HOSTNAME: &str = "storm.local.hostname";
    /// The file holding the cluster secret (no default: an open cluster).
    pub const SQUALL_SECRET_FILE: &str = crate::secret::SECRET_FILE_KEY;
    /// Seconds a worker has to exit after SIGTERM before the supervisor sends SIGKILL.
    pub const SUPERVISOR_WORKER_SHUTDOWN_SLEEP_SECS: &str = "supervisor.worker.shutdown.sleep.secs";
    /// Size in bytes at which the supervisor rotates a worker's `worker.log`.
    pub const WORKER_LOG_MAX_BYTES: &str = "worker.log.max.bytes";
    /// Rotated worker logs kept per worker.
    pub const WORKER_LOG_MAX_FILES: &str = "worker.log.max.files";
    /// Minutes the logs of a topology no longer assigned on a machine are kept.
    pub const LOGVIEWER_CLEANUP_AGE_MINS: &str = "logviewer.cleanup.age.mins";
    /// Hosts running `squall drpc` (a list; an entry may be `host:port`).
    pub const DRPC_SERVERS: &str = "drpc.servers";
    /// Port of the DRPC server's API (clients and topologies).
    pub const DRPC_PORT: &str = "drpc.port";
    /// Port serving the same DRPC API as `drpc.port` (-1: off).
    pub const DRPC_INVOCATIONS_PORT: &str = "drpc.invocations.port";
    /// Port of Storm's DRPC HTTP interface (-1: off).
    pub const DRPC_HTTP_PORT: &str = "drpc.http.port";
    /// Seconds a DRPC request waits for its answer.
    pub const DRPC_REQUEST_TIMEOUT_SECS: &str = "drpc.request.timeout.secs";
    /// Largest request body the DRPC server reads, in bytes.
    pub const DRPC_MAX_BUFFER_SIZE: &str = "drpc.max_buffer_size";
    /// Seconds without a fetch after which a served DRPC function's requests fail.
    pub const SQUALL_DRPC_FETCHER_TIMEOUT_SECS: &str = "squall.drpc.fetcher.timeout.secs";

    /// Keys Squall reads that have no default in `defaults.yaml`.
    pub const WITHOUT_DEFAULT: &[&str] = &[STORM_LOCAL_HOSTNAME, SQUALL_SECRET_FILE];

    /// The prefix of topology keys, which stay open (any key is accepted).
    pub const TOPOLOGY_PREFIX: &str = "topology.";
}

/// Whether Squall reads `key` from a cluster config: a key of the embedded defaults, one
/// of [`keys::WITHOUT_DEFAULT`], or any `topology.*` key.
pub fn is_known_key(key: &str) -> bool {
    key.starts_with(keys::TOPOLOGY_PREFIX)
        || defaults().get(key).is_some()
        || keys::WITHOUT_DEFAULT.contains(&key)
}

/// Every cluster key Squall reads (not counting the open `topology.*` keys), sorted.
pub fn known_keys() -> Vec<&'static str> {
    let mut all: Vec<&'static str> = defaults()
        .iter()
        .map(|(k, _)| k)
        .filter(|k| !k.starts_with(keys::TOPOLOGY_PREFIX))
        .chain(keys::WITHOUT_DEFAULT.iter().copied())
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// The known key closest to `key` by edit distance, when it is close enough to be a typo.
pub fn closest_known_key(key: &str) -> Option<&'static str> {
    let limit = (key.chars().count() / 4).clamp(1, 4);
    known_keys()
        .into_iter()
        .map(|k| (strsim::levenshtein(key, k), k))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, k)| k)
}

/// Refuses keys of `conf` that Squall does not read (see [`is_known_key`]).
fn check_keys(conf: &Config, origin: &str) -> Result<(), ConfigFileError> {
    match conf.iter().find(|(k, _)| !is_known_key(k)) {
        None => Ok(()),
        Some((key, _)) => Err(ConfigFileError::UnknownKey {
            origin: origin.to_owned(),
            key: key.to_owned(),
            hint: match closest_known_key(key) {
                Some(k) => format!("did you mean '{k}'?"),
                None => format!(
                    "Squall's cluster keys are listed in its defaults.yaml; topology settings \
                     start with '{}'",
                    keys::TOPOLOGY_PREFIX
                ),
            },
        }),
    }
}

/// Why a configuration file, text or `-c` override could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid YAML.
    #[error("{origin}: invalid YAML at line {line}, column {column}: {message}")]
    Yaml {
        /// Where the text came from (a file path, `-c key=value`, …).
        origin: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's description.
        message: String,
    },
    /// The text holds more than one YAML document (`---`).
    #[error("{origin}: expected one YAML document, found {count}")]
    MultipleDocuments {
        /// Where the text came from.
        origin: String,
        /// How many documents it holds.
        count: usize,
    },
    /// The top level is not a map of keys to values.
    #[error(
        "{origin}: the top level must be a map of config keys to values \
         (as in storm.yaml: `storm.zookeeper.port: 2181`), found {found}"
    )]
    NotAMap {
        /// Where the text came from.
        origin: String,
        /// What was found instead, such as `a list`.
        found: String,
    },
    /// A map key is not a string.
    #[error(
        "{origin}: config key {key} is not a string; keys are dotted names such as \
         storm.zookeeper.port (quote it if it is meant as one)"
    )]
    NonStringKey {
        /// Where the text came from.
        origin: String,
        /// The key (and the map it is in, for nested maps), as written.
        key: String,
    },
    /// A YAML feature that has no config value (an alias).
    #[error("{origin}: config key '{key}' uses {what}, which Squall's config does not support")]
    Unsupported {
        /// Where the text came from.
        origin: String,
        /// The key whose value uses it.
        key: String,
        /// The feature.
        what: &'static str,
    },
    /// A `-c` override is not of the form `key=value`.
    #[error("invalid override '-c {arg}': expected key=value, e.g. -c topology.workers=3")]
    OverrideSyntax {
        /// The override as given.
        arg: String,
    },
    /// The value of a `-c` override is not valid YAML.
    #[error("invalid override '-c {arg}': the value is not valid YAML ({message})")]
    OverrideValue {
        /// The override as given.
        arg: String,
        /// The parser's description.
        message: String,
    },
    /// A `-c` override has an empty key.
    #[error("invalid override '-c {arg}': the key before '=' is empty")]
    OverrideEmptyKey {
        /// The override as given.
        arg: String,
    },
    /// A key Squall does not read (most likely a typo).
    #[error("{origin}: unknown config key '{key}'; {hint}")]
    UnknownKey {
        /// Where the key came from (a file path, `-c key=value`, …).
        origin: String,
        /// The key.
        key: String,
        /// The closest known key, or where the known keys are listed.
        hint: String,
    },
}

/// Reads the cluster configuration: the embedded defaults, then `config_file` (a
/// `storm.yaml`-style file) if given, then each `-c key=value` override in order.
///
/// Override values are parsed as YAML: `[6700,6701]` is a list, `3` an integer, `true` a
/// boolean, `"3"` and bare words strings, an empty value `null`. A key Squall does not
/// read is refused ([`ConfigFileError::UnknownKey`]), except `topology.*` keys.
pub fn load(config_file: Option<&Path>, overrides: &[String]) -> Result<Config, ConfigFileError> {
    let mut conf = defaults().clone();
    if let Some(path) = config_file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        let origin = path.display().to_string();
        let file = parse_map(&text, &origin)?;
        check_keys(&file, &origin)?;
        conf.merge(&file);
    }
    for arg in overrides {
        let (key, value) = parse_override(arg)?;
        if !is_known_key(&key) {
            let mut one = Config::new();
            one.set(key.clone(), Value::Null);
            check_keys(&one, &format!("-c {arg}"))?;
        }
        conf.set(key, value);
    }
    Ok(conf)
}

/// Reads YAML text (a map of dotted keys to values) over the embedded defaults; for
/// tests and for configuration that does not come from a file. Keys are checked as
/// [`load`] checks them.
pub fn load_str(yaml: &str) -> Result<Config, ConfigFileError> {
    let mut conf = defaults().clone();
    let text = parse_map(yaml, "config text")?;
    check_keys(&text, "config text")?;
    conf.merge(&text);
    Ok(conf)
}

/// The embedded defaults, parsed once.
pub fn defaults() -> &'static Config {
    static DEFAULTS: OnceLock<Config> = OnceLock::new();
    DEFAULTS.get_or_init(|| {
        parse_map(DEFAULTS_YAML, "built-in defaults.yaml")
            .expect("the embedded defaults.yaml is valid (checked by a unit test)")
    })
}

/// Splits a `-c key=value` override and parses its value as YAML.
pub fn parse_override(arg: &str) -> Result<(String, Value), ConfigFileError> {
    let Some((key, value)) = arg.split_once('=') else {
        return Err(ConfigFileError::OverrideSyntax {
            arg: arg.to_owned(),
        });
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(ConfigFileError::OverrideEmptyKey {
            arg: arg.to_owned(),
        });
    }
    let origin = format!("-c {arg}");
    let doc = parse_document(value, &origin).map_err(|e| match e {
        ConfigFileError::Yaml { message, .. } => ConfigFileError::OverrideValue {
            arg: arg.to_owned(),
            message,
        },
        other => other,
    })?;
    let value = match doc {
        None => Value::Null,
        Some(doc) => yaml_to_value(doc, &origin, key)?,
    };
    Ok((key.to_owned(), value))
}

/// Parses `text` as at most one YAML document.
fn parse_document(text: &str, origin: &str) -> Result<Option<Yaml>, ConfigFileError> {
    let mut docs = YamlLoader::load_from_str(text).map_err(|e| ConfigFileError::Yaml {
        origin: origin.to_owned(),
        line: e.marker().line(),
        column: e.marker().col() + 1,
        message: e.info().to_owned(),
    })?;
    match docs.len() {
        0 => Ok(None),
        1 => Ok(docs.pop()),
        count => Err(ConfigFileError::MultipleDocuments {
            origin: origin.to_owned(),
            count,
        }),
    }
}

/// Parses `text` as a map of config keys; empty text (or only comments) is an empty map.
fn parse_map(text: &str, origin: &str) -> Result<Config, ConfigFileError> {
    let mut conf = Config::new();
    let hash = match parse_document(text, origin)? {
        None | Some(Yaml::Null) => return Ok(conf),
        Some(Yaml::Hash(hash)) => hash,
        Some(other) => {
            return Err(ConfigFileError::NotAMap {
                origin: origin.to_owned(),
                found: describe(&other),
            })
        }
    };
    for (key, value) in hash {
        let Yaml::String(key) = key else {
            return Err(ConfigFileError::NonStringKey {
                origin: origin.to_owned(),
                key: show_key(&key),
            });
        };
        let value = yaml_to_value(value, origin, &key)?;
        conf.set(key, value);
    }
    Ok(conf)
}

/// Converts one YAML value (of config key `key`, for error messages) to a [`Value`].
fn yaml_to_value(yaml: Yaml, origin: &str, key: &str) -> Result<Value, ConfigFileError> {
    Ok(match yaml {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Integer(i) => Value::Int(i),
        Yaml::Real(text) => match Yaml::Real(text.clone()).as_f64() {
            Some(f) => Value::Float(f),
            None => Value::from(text),
        },
        Yaml::String(s) => Value::from(s),
        Yaml::Array(items) => Value::List(
            items
                .into_iter()
                .map(|item| yaml_to_value(item, origin, key))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Hash(hash) => {
            let mut map = BTreeMap::new();
            for (k, v) in hash {
                let Yaml::String(k) = k else {
                    return Err(ConfigFileError::NonStringKey {
                        origin: origin.to_owned(),
                        key: format!("{} (in the map of '{key}')", show_key(&k)),
                    });
                };
                let v = yaml_to_value(v, origin, key)?;
                map.insert(k, v);
            }
            Value::Map(map)
        }
        Yaml::Alias(_) => {
            return Err(ConfigFileError::Unsupported {
                origin: origin.to_owned(),
                key: key.to_owned(),
                what: "a YAML alias",
            })
        }
        Yaml::BadValue => {
            return Err(ConfigFileError::Unsupported {
                origin: origin.to_owned(),
                key: key.to_owned(),
                what: "an unreadable YAML value",
            })
        }
    })
}

fn describe(yaml: &Yaml) -> String {
    match yaml {
        Yaml::Array(_) => "a list".to_owned(),
        Yaml::Hash(_) => "a map".to_owned(),
        Yaml::String(s) => format!("the string \"{s}\""),
        Yaml::Integer(i) => format!("the number {i}"),
        Yaml::Real(r) => format!("the number {r}"),
        Yaml::Boolean(b) => format!("the boolean {b}"),
        Yaml::Null => "null".to_owned(),
        Yaml::Alias(_) => "an alias".to_owned(),
        Yaml::BadValue => "an unreadable value".to_owned(),
    }
}

fn show_key(yaml: &Yaml) -> String {
    match yaml {
        Yaml::Integer(i) => i.to_string(),
        Yaml::Real(r) => r.clone(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Null => "null".to_owned(),
        other => describe(other),
    }
}

/// Typed access to the cluster keys daemons need, for [`squall_api::Config`].
///
/// A missing or `null` key takes its value from the embedded defaults; a value of the
/// wrong type is an error naming the key. Lists of hosts or ports may be given as a
/// single scalar (`storm.zookeeper.servers: zk1`). Numbers may be given as numeric
/// strings, as `-c key="3"` produces.
pub trait ClusterConfig {
    /// `storm.zookeeper.servers`: the ZooKeeper hosts (non-empty).
    fn zookeeper_servers(&self) -> Result<Vec<String>, ConfigError>;
    /// `storm.zookeeper.port` (1..=65535).
    fn zookeeper_port(&self) -> Result<u16, ConfigError>;
    /// Every ZooKeeper server with the port, as a client connect string:
    /// `"zk1:2181,zk2:2181"`. A server already written as `host:port` keeps its port.
    fn zookeeper_connect_string(&self) -> Result<String, ConfigError>;
    /// `storm.zookeeper.root`: an absolute ZooKeeper path without a trailing `/`
    /// (`"/squall"`; `"/"` stays `"/"`).
    fn zookeeper_root(&self) -> Result<String, ConfigError>;
    /// `storm.zookeeper.session.timeout` (milliseconds, positive).
    fn zookeeper_session_timeout(&self) -> Result<Duration, ConfigError>;
    /// `storm.local.dir`.
    fn local_dir(&self) -> Result<PathBuf, ConfigError>;
    /// `nimbus.seeds`: the hosts that may run Nimbus (non-empty).
    fn nimbus_seeds(&self) -> Result<Vec<String>, ConfigError>;
    /// `nimbus.thrift.port` (0 asks the OS for a free port).
    fn nimbus_port(&self) -> Result<u16, ConfigError>;
    /// `nimbus.monitor.freq.secs`.
    fn nimbus_monitor_freq(&self) -> Result<Duration, ConfigError>;
    /// `nimbus.supervisor.timeout.secs`.
    fn nimbus_supervisor_timeout(&self) -> Result<Duration, ConfigError>;
    /// `nimbus.task.timeout.secs`.
    fn nimbus_task_timeout(&self) -> Result<Duration, ConfigError>;
    /// `nimbus.binary.max.bytes` (positive).
    fn nimbus_binary_max_bytes(&self) -> Result<u64, ConfigError>;
    /// `supervisor.slots.ports`: non-empty, each in 1..=65535, no duplicates.
    fn supervisor_slot_ports(&self) -> Result<Vec<u16>, ConfigError>;
    /// `supervisor.worker.timeout.secs`.
    fn supervisor_worker_timeout(&self) -> Result<Duration, ConfigError>;
    /// `supervisor.worker.start.timeout.secs`.
    fn supervisor_worker_start_timeout(&self) -> Result<Duration, ConfigError>;
    /// `supervisor.monitor.frequency.secs`.
    fn supervisor_monitor_frequency(&self) -> Result<Duration, ConfigError>;
    /// `supervisor.heartbeat.frequency.secs`.
    fn supervisor_heartbeat_frequency(&self) -> Result<Duration, ConfigError>;
    /// `worker.heartbeat.frequency.secs`.
    fn worker_heartbeat_frequency(&self) -> Result<Duration, ConfigError>;
    /// `supervisor.worker.shutdown.sleep.secs`: SIGTERM to SIGKILL.
    fn supervisor_worker_shutdown_sleep(&self) -> Result<Duration, ConfigError>;
    /// `worker.log.max.bytes` (positive).
    fn worker_log_max_bytes(&self) -> Result<u64, ConfigError>;
    /// `worker.log.max.files` (positive).
    fn worker_log_max_files(&self) -> Result<u32, ConfigError>;
    /// `logviewer.cleanup.age.mins`: how long logs of a topology gone from a machine stay.
    fn logviewer_cleanup_age(&self) -> Result<Duration, ConfigError>;
    /// `ui.port` (0 asks the OS for a free port).
    fn ui_port(&self) -> Result<u16, ConfigError>;
    /// `ui.host`: the address the UI listens on.
    fn ui_host(&self) -> Result<String, ConfigError>;
    /// `logviewer.port` (0 asks the OS for a free port).
    fn logviewer_port(&self) -> Result<u16, ConfigError>;
    /// `logviewer.host`: the address the logviewer listens on.
    fn logviewer_host(&self) -> Result<String, ConfigError>;
    /// `dev.zookeeper.path`: the data directory of `squall dev-zookeeper`.
    fn dev_zookeeper_path(&self) -> Result<PathBuf, ConfigError>;
    /// `drpc.servers`: the hosts running `squall drpc` (non-empty; `host` or `host:port`).
    fn drpc_servers(&self) -> Result<Vec<String>, ConfigError>;
    /// `drpc.port` (0 asks the OS for a free port).
    fn drpc_port(&self) -> Result<u16, ConfigError>;
    /// `drpc.invocations.port` (`None`: off, written -1; 0 asks the OS for a free port).
    fn drpc_invocations_port(&self) -> Result<Option<u16>, ConfigError>;
    /// `drpc.http.port` (`None`: off, written -1; 0 asks the OS for a free port).
    fn drpc_http_port(&self) -> Result<Option<u16>, ConfigError>;
    /// `drpc.request.timeout.secs`.
    fn drpc_request_timeout(&self) -> Result<Duration, ConfigError>;
    /// `drpc.max_buffer_size` (positive).
    fn drpc_max_buffer_size(&self) -> Result<u64, ConfigError>;
    /// `squall.drpc.fetcher.timeout.secs`.
    fn drpc_fetcher_timeout(&self) -> Result<Duration, ConfigError>;
    /// Reads every key above, so a daemon reports a bad value when it starts.
    fn validate_cluster(&self) -> Result<(), ConfigError>;
}

impl ClusterConfig for Config {
    fn zookeeper_servers(&self) -> Result<Vec<String>, ConfigError> {
        host_list(self, keys::STORM_ZOOKEEPER_SERVERS)
    }

    fn zookeeper_port(&self) -> Result<u16, ConfigError> {
        port(self, keys::STORM_ZOOKEEPER_PORT, 1)
    }

    fn zookeeper_connect_string(&self) -> Result<String, ConfigError> {
        let port = self.zookeeper_port()?;
        let servers = self.zookeeper_servers()?;
        let with_port: Vec<String> = servers
            .iter()
            .map(|host| {
                if has_port(host) {
                    host.clone()
                } else {
                    format!("{host}:{port}")
                }
            })
            .collect();
        Ok(with_port.join(","))
    }

    fn zookeeper_root(&self) -> Result<String, ConfigError> {
        let key = keys::STORM_ZOOKEEPER_ROOT;
        let v = lookup(self, key);
        match v.as_str() {
            Some(s) if s.starts_with('/') && !s.contains("//") => {
                let trimmed = s.trim_end_matches('/');
                Ok(if trimmed.is_empty() { "/" } else { trimmed }.to_owned())
            }
            _ => Err(invalid(
                key,
                "an absolute ZooKeeper path such as \"/squall\"",
                v,
            )),
        }
    }

    fn zookeeper_session_timeout(&self) -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(positive(
            self,
            keys::STORM_ZOOKEEPER_SESSION_TIMEOUT,
        )?))
    }

    fn local_dir(&self) -> Result<PathBuf, ConfigError> {
        path(self, keys::STORM_LOCAL_DIR)
    }

    fn nimbus_seeds(&self) -> Result<Vec<String>, ConfigError> {
        host_list(self, keys::NIMBUS_SEEDS)
    }

    fn nimbus_port(&self) -> Result<u16, ConfigError> {
        port(self, keys::NIMBUS_THRIFT_PORT, 0)
    }

    fn nimbus_monitor_freq(&self) -> Result<Duration, ConfigError> {
        secs(self, keys::NIMBUS_MONITOR_FREQ_SECS)
    }

    fn nimbus_supervisor_timeout(&self) -> Result<Duration, ConfigError> {
        secs(self, keys::NIMBUS_SUPERVISOR_TIMEOUT_SECS)
    }

    fn nimbus_task_timeout(&self) -> Result<Duration, ConfigError> {
        secs(self, keys::NIMBUS_TASK_TIMEOUT_SECS)
    }

    fn nimbus_binary_max_bytes(&self) -> Result<u64, ConfigError> {
        positive(self, keys::NIMBUS_BINARY_MAX_BYTES)
    }

    fn supervisor_slot_ports(&self) -> Result<Vec<u16>, ConfigError> {
        const EXPECTED: &str =
            "a non-empty list of distinct ports between 1 and 65535, such as [6700, 6701]";
        let key = keys::SUPERVISOR_SLOTS_PORTS;
        let v = lookup(self, key);
        let items = match v {
            Value::List(items) => items.as_slice(),
            scalar => std::slice::from_ref(scalar),
        };
        let mut ports = Vec::with_capacity(items.len());
        for item in items {
            match as_u64(item) {
                Some(p @ 1..=65535) if !ports.contains(&(p as u16)) => ports.push(p as u16),
                _ => return Err(invalid(key, EXPECTED, v)),
            }
        }
        if ports.is_empty() {
            return Err(invalid(key, EXPECTED, v));
        }
        Ok(ports)
    }

    fn supervisor_worker_timeout(&self) -> Result<Duration, ConfigError> {
        secs(self, keys::SUPERVISOR_WORKER_TIMEOUT_SECS)
    }

    fn supervisor_worker_start_timeout(&self) -> Result<Duration, ConfigError> {
        secs(self, keys::SUPERVISOR_WORKER_START_TIMEOUT_SECS)
    }

    fn supervisor_monitor_frequency(&self) -> Result<Duration, ConfigError> {
        secs(self, keys::SUPERVISOR_MONITOR_FREQUENCY_SECS)
    }

    fn supervisor_heartbeat_frequency(&self) -> Result<Duration, ConfigError> {
        secs(self, keys::SUPERVISOR_HEARTBEAT_FREQUENCY_SECS)
    }

    fn worker_heartbeat_frequency(&self) -> Result<Duration, ConfigError> {
        secs(self, keys::WORKER_HEARTBEAT_FREQUENCY_SECS)
    }

    fn supervisor_worker_shutdown_sleep(&self) -> Result<Duration, ConfigError> {
        secs(self, keys::SUPERVISOR_WORKER_SHUTDOWN_SLEEP_SECS)
    }

    fn worker_log_max_bytes(&self) -> Result<u64, ConfigError> {
        positive(self, keys::WORKER_LOG_MAX_BYTES)
    }

    fn worker_log_max_files(&self) -> Result<u32, ConfigError> {
        let key = keys::WORKER_LOG_MAX_FILES;
        let v = lookup(self, key);
        match as_u64(v) {
            Some(n @ 1..=1000) => Ok(n as u32),
            _ => Err(invalid(key, "an integer between 1 and 1000", v)),
        }
    }

    fn logviewer_cleanup_age(&self) -> Result<Duration, ConfigError> {
        let mins = positive(self, keys::LOGVIEWER_CLEANUP_AGE_MINS)?;
        Ok(Duration::from_secs(mins.saturating_mul(60)))
    }

    fn ui_port(&self) -> Result<u16, ConfigError> {
        port(self, keys::UI_PORT, 0)
    }

    fn ui_host(&self) -> Result<String, ConfigError> {
        string(self, keys::UI_HOST)
    }

    fn logviewer_port(&self) -> Result<u16, ConfigError> {
        port(self, keys::LOGVIEWER_PORT, 0)
    }

    fn logviewer_host(&self) -> Result<String, ConfigError> {
        string(self, keys::LOGVIEWER_HOST)
    }

    fn dev_zookeeper_path(&self) -> Result<PathBuf, ConfigError> {
        path(self, keys::DEV_ZOOKEEPER_PATH)
    }

    fn drpc_servers(&self) -> Result<Vec<String>, ConfigError> {
        host_list(self, keys::DRPC_SERVERS)
    }

    fn drpc_port(&self) -> Result<u16, ConfigError> {
        port(self, keys::DRPC_PORT, 0)
    }

    fn drpc_invocations_port(&self) -> Result<Option<u16>, ConfigError> {
        optional_port(self, keys::DRPC_INVOCATIONS_PORT)
    }

    fn drpc_http_port(&self) -> Result<Option<u16>, ConfigError> {
        optional_port(self, keys::DRPC_HTTP_PORT)
    }

    fn drpc_request_timeout(&self) -> Result<Duration, ConfigError> {
        secs(self, keys::DRPC_REQUEST_TIMEOUT_SECS)
    }

    fn drpc_max_buffer_size(&self) -> Result<u64, ConfigError> {
        positive(self, keys::DRPC_MAX_BUFFER_SIZE)
    }

    fn drpc_fetcher_timeout(&self) -> Result<Duration, ConfigError> {
        secs(self, keys::SQUALL_DRPC_FETCHER_TIMEOUT_SECS)
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        self.get_str(keys::STORM_LOCAL_HOSTNAME)?;
        self.get_str(keys::SQUALL_SECRET_FILE)?;
        self.zookeeper_connect_string()?;
        self.zookeeper_root()?;
        self.zookeeper_session_timeout()?;
        self.local_dir()?;
        self.nimbus_seeds()?;
        self.nimbus_port()?;
        self.nimbus_monitor_freq()?;
        self.nimbus_supervisor_timeout()?;
        self.nimbus_task_timeout()?;
        self.nimbus_binary_max_bytes()?;
        self.supervisor_slot_ports()?;
        self.supervisor_worker_timeout()?;
        self.supervisor_worker_start_timeout()?;
        self.supervisor_monitor_frequency()?;
        self.supervisor_heartbeat_frequency()?;
        self.worker_heartbeat_frequency()?;
        self.supervisor_worker_shutdown_sleep()?;
        self.worker_log_max_bytes()?;
        self.worker_log_max_files()?;
        self.logviewer_cleanup_age()?;
        self.ui_port()?;
        self.ui_host()?;
        self.logviewer_port()?;
        self.logviewer_host()?;
        self.dev_zookeeper_path()?;
        self.drpc_servers()?;
        self.drpc_port()?;
        self.drpc_invocations_port()?;
        self.drpc_http_port()?;
        self.drpc_request_timeout()?;
        self.drpc_max_buffer_size()?;
        self.drpc_fetcher_timeout()?;
        Ok(())
    }
}

/// The value of `key`, or its default when missing or `null`.
fn lookup<'a>(conf: &'a Config, key: &str) -> &'a Value {
    const NULL: &Value = &Value::Null;
    match conf.get(key) {
        Some(v) if !v.is_null() => v,
        _ => defaults().get(key).unwrap_or(NULL),
    }
}

fn invalid(key: &str, expected: &'static str, found: &Value) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        expected,
        found: match found {
            Value::Str(s) => format!("\"{s}\""),
            other => other.to_string(),
        },
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn positive(conf: &Config, key: &str) -> Result<u64, ConfigError> {
    let v = lookup(conf, key);
    match as_u64(v) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(invalid(key, "a positive integer", v)),
    }
}

fn secs(conf: &Config, key: &str) -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(positive(conf, key)?))
}

fn port(conf: &Config, key: &str, min: u64) -> Result<u16, ConfigError> {
    let v = lookup(conf, key);
    match as_u64(v) {
        Some(p) if p >= min && p <= 65535 => Ok(p as u16),
        _ if min == 0 => Err(invalid(key, "a port number between 0 and 65535", v)),
        _ => Err(invalid(key, "a port number between 1 and 65535", v)),
    }
}

/// A port that may be turned off with a negative number (`-1`).
fn optional_port(conf: &Config, key: &str) -> Result<Option<u16>, ConfigError> {
    let v = lookup(conf, key);
    match v {
        Value::Int(i) if *i < 0 => Ok(None),
        _ => match as_u64(v) {
            Some(p) if p <= 65535 => Ok(Some(p as u16)),
            _ => Err(invalid(
                key,
                "a port number between 0 and 65535, or -1 to turn it off",
                v,
            )),
        },
    }
}

fn string(conf: &Config, key: &str) -> Result<String, ConfigError> {
    let v = lookup(conf, key);
    match v.as_str() {
        Some(s) if !s.is_empty() => Ok(s.to_owned()),
        _ => Err(invalid(key, "a non-empty string", v)),
    }
}

fn path(conf: &Config, key: &str) -> Result<PathBuf, ConfigError> {
    let v = lookup(conf, key);
    match v.as_str() {
        Some(s) if !s.is_empty() => Ok(PathBuf::from(s)),
        _ => Err(invalid(key, "a non-empty path", v)),
    }
}

fn host_list(conf: &Config, key: &str) -> Result<Vec<String>, ConfigError> {
    const EXPECTED: &str = "a non-empty list of host names, such as [\"zk1\", \"zk2\"]";
    let v = lookup(conf, key);
    let items = match v {
        Value::List(items) => items.as_slice(),
        scalar => std::slice::from_ref(scalar),
    };
    let hosts: Option<Vec<String>> = items
        .iter()
        .map(|item| match item.as_str().map(str::trim) {
            Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
                Some(host.to_owned())
            }
            _ => None,
        })
        .collect();
    match hosts {
        Some(hosts) if !hosts.is_empty() => Ok(hosts),
        _ => Err(invalid(key, EXPECTED, v)),
    }
}

/// Whether `host` already ends in `:port` (an IPv6 address only when bracketed).
fn has_port(host: &str) -> bool {
    let Some((before, after)) = host.rsplit_once(':') else {
        return false;
    };
    let plain_host = !before.contains(':') || before.ends_with(']');
    plain_host && !after.is_empty() && after.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn ov(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    fn list(items: &[Value]) -> Value {
        Value::List(items.to_vec())
    }

    #[test]
    fn defaults_hold_every_key_with_storms_values() {
        let c = load(None, &[]).unwrap();
        assert_eq!(c.zookeeper_servers().unwrap(), vec!["localhost"]);
        assert_eq!(c.zookeeper_port().unwrap(), 2181);
        assert_eq!(c.zookeeper_connect_string().unwrap(), "localhost:2181");
        assert_eq!(c.zookeeper_root().unwrap(), "/squall");
        assert_eq!(
            c.zookeeper_session_timeout().unwrap(),
            Duration::from_secs(20)
        );
        assert_eq!(c.local_dir().unwrap(), PathBuf::from("storm-local"));
        assert_eq!(c.nimbus_seeds().unwrap(), vec!["localhost"]);
        assert_eq!(c.nimbus_port().unwrap(), 6627);
        assert_eq!(c.nimbus_monitor_freq().unwrap(), Duration::from_secs(10));
        assert_eq!(
            c.nimbus_supervisor_timeout().unwrap(),
            Duration::from_secs(60)
        );
        assert_eq!(c.nimbus_task_timeout().unwrap(), Duration::from_secs(30));
        assert_eq!(c.nimbus_binary_max_bytes().unwrap(), 1 << 30);
        assert_eq!(
            c.supervisor_slot_ports().unwrap(),
            vec![6700, 6701, 6702, 6703]
        );
        assert_eq!(
            c.supervisor_worker_timeout().unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            c.supervisor_worker_start_timeout().unwrap(),
            Duration::from_secs(120)
        );
        assert_eq!(
            c.supervisor_monitor_frequency().unwrap(),
            Duration::from_secs(3)
        );
        assert_eq!(
            c.supervisor_heartbeat_frequency().unwrap(),
            Duration::from_secs(5)
        );
        assert_eq!(
            c.worker_heartbeat_frequency().unwrap(),
            Duration::from_secs(1)
        );
        assert_eq!(
            c.supervisor_worker_shutdown_sleep().unwrap(),
            Duration::from_secs(3)
        );
        assert_eq!(c.worker_log_max_bytes().unwrap(), 100 << 20);
        assert_eq!(c.worker_log_max_files().unwrap(), 5);
        assert_eq!(
            c.logviewer_cleanup_age().unwrap(),
            Duration::from_secs(7 * 24 * 3600)
        );
        assert_eq!(c.ui_port().unwrap(), 8080);
        assert_eq!(
            c.dev_zookeeper_path().unwrap(),
            PathBuf::from("/tmp/dev-storm-zookeeper")
        );
        assert_eq!(c.drpc_servers().unwrap(), vec!["localhost"]);
        assert_eq!(c.drpc_port().unwrap(), 3772);
        assert_eq!(c.drpc_invocations_port().unwrap(), Some(3773));
        assert_eq!(c.drpc_http_port().unwrap(), Some(3774));
        assert_eq!(c.drpc_request_timeout().unwrap(), Duration::from_secs(600));
        assert_eq!(c.drpc_max_buffer_size().unwrap(), 1 << 20);
        assert_eq!(c.drpc_fetcher_timeout().unwrap(), Duration::from_secs(10));
        // The topology keys are plain values, read by squall_api::Config's accessors.
        assert_eq!(c.message_timeout_secs().unwrap(), 30);
        assert_eq!(c.num_workers().unwrap(), 1);
        c.validate_cluster().unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn every_default_key_has_a_comment_and_a_constant() {
        let lines: Vec<&str> = DEFAULTS_YAML.lines().collect();
        let mut count = 0;
        for (i, line) in lines.iter().enumerate() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            count += 1;
            assert!(
                i > 0 && lines[i - 1].starts_with("# "),
                "defaults.yaml line {} has no comment above it: {line}",
                i + 1
            );
        }
        assert_eq!(count, defaults().iter().count());
        for key in [
            keys::STORM_ZOOKEEPER_SERVERS,
            keys::STORM_ZOOKEEPER_PORT,
            keys::STORM_ZOOKEEPER_ROOT,
            keys::STORM_ZOOKEEPER_SESSION_TIMEOUT,
            keys::STORM_LOCAL_DIR,
            keys::NIMBUS_SEEDS,
            keys::NIMBUS_THRIFT_PORT,
            keys::NIMBUS_MONITOR_FREQ_SECS,
            keys::NIMBUS_SUPERVISOR_TIMEOUT_SECS,
            keys::NIMBUS_TASK_TIMEOUT_SECS,
            keys::NIMBUS_BINARY_MAX_BYTES,
            keys::SUPERVISOR_SLOTS_PORTS,
            keys::SUPERVISOR_WORKER_TIMEOUT_SECS,
            keys::SUPERVISOR_WORKER_START_TIMEOUT_SECS,
            keys::SUPERVISOR_MONITOR_FREQUENCY_SECS,
            keys::SUPERVISOR_HEARTBEAT_FREQUENCY_SECS,
            keys::WORKER_HEARTBEAT_FREQUENCY_SECS,
            keys::SUPERVISOR_WORKER_SHUTDOWN_SLEEP_SECS,
            keys::WORKER_LOG_MAX_BYTES,
            keys::WORKER_LOG_MAX_FILES,
            keys::LOGVIEWER_CLEANUP_AGE_MINS,
            keys::UI_PORT,
            keys::DEV_ZOOKEEPER_PATH,
            keys::DRPC_SERVERS,
            keys::DRPC_PORT,
            keys::DRPC_INVOCATIONS_PORT,
            keys::DRPC_HTTP_PORT,
            keys::DRPC_REQUEST_TIMEOUT_SECS,
            keys::DRPC_MAX_BUFFER_SIZE,
            keys::SQUALL_DRPC_FETCHER_TIMEOUT_SECS,
            squall_api::config::keys::TOPOLOGY_MESSAGE_TIMEOUT_SECS,
            squall_api::config::keys::TOPOLOGY_WORKERS,
        ] {
            assert!(defaults().get(key).is_some(), "no default for {key}");
        }
    }

    #[test]
    fn file_overrides_defaults_and_keeps_topology_keys() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "# a storm.yaml\n\
             storm.zookeeper.servers:\n  - \"zk1\"\n  - \"zk2\"\n\
             storm.zookeeper.port: 2182\n\
             nimbus.seeds: [\"n1\"]\n\
             storm.local.hostname: host1\n\
             squall.secret.file: /etc/squall/secret\n\
             topology.debug: true\n\
             topology.my.ratio: 0.5\n\
             topology.my.nothing: ~\n\
             topology.my.map: {{a: 1, b: [x, y]}}"
        )
        .unwrap();
        let c = load(Some(f.path()), &[]).unwrap();
        assert_eq!(c.zookeeper_connect_string().unwrap(), "zk1:2182,zk2:2182");
        assert_eq!(c.nimbus_seeds().unwrap(), vec!["n1"]);
        assert_eq!(crate::local_hostname(&c), "host1");
        assert_eq!(c.get("topology.debug"), Some(&Value::Bool(true)));
        assert_eq!(c.get("topology.my.ratio"), Some(&Value::Float(0.5)));
        assert_eq!(c.get("topology.my.nothing"), Some(&Value::Null));
        let mut m = BTreeMap::new();
        m.insert("a".to_string(), Value::Int(1));
        m.insert("b".to_string(), list(&["x".into(), "y".into()]));
        assert_eq!(c.get("topology.my.map"), Some(&Value::Map(m)));
        // Untouched keys keep their defaults.
        assert_eq!(c.ui_port().unwrap(), 8080);
        c.validate_cluster().unwrap();
    }

    #[test]
    fn unknown_keys_are_refused_naming_the_key_the_origin_and_a_close_known_key() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "nimbus.seeds: [n1]\nsupervisor.slot.ports: [6700, 6701]").unwrap();
        let e = load(Some(f.path()), &[]).unwrap_err();
        assert!(
            matches!(&e, ConfigFileError::UnknownKey { key, .. } if key == "supervisor.slot.ports")
        );
        assert_eq!(
            e.to_string(),
            format!(
                "{}: unknown config key 'supervisor.slot.ports'; did you mean \
                 'supervisor.slots.ports'?",
                f.path().display()
            )
        );
        // The same typo as a -c override names the override.
        let e = load(None, &ov(&["supervisor.slot.ports=[6700]"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "-c supervisor.slot.ports=[6700]: unknown config key 'supervisor.slot.ports'; \
             did you mean 'supervisor.slots.ports'?"
        );
        // Keys without a default are known too; a key far from every known one says
        // where the known keys are.
        assert_eq!(
            closest_known_key("squall.secret.fil"),
            Some("squall.secret.file")
        );
        assert_eq!(
            closest_known_key("logviewer.cleanup.age.min"),
            Some("logviewer.cleanup.age.mins")
        );
        let e = load_str("my.own.setting: 1").unwrap_err();
        assert!(e.to_string().starts_with("config text: unknown config key 'my.own.setting'; Squall's cluster keys are listed in its defaults.yaml"), "{e}");
        assert!(load(None, &ov(&["nimbus.host=h"])).is_err());
        // Every known key is read by something: it has an accessor or a reader.
        for key in known_keys() {
            assert!(is_known_key(key));
            assert!(!key.starts_with("topology."), "{key}");
        }
        assert!(known_keys().contains(&"storm.local.hostname"));
        assert!(is_known_key("topology.anything.at.all"));
    }

    #[test]
    fn override_errors_name_the_override() {
        let e = load(None, &ov(&["topology.workers"])).unwrap_err();
        assert!(matches!(e, ConfigFileError::OverrideSyntax { .. }));
        assert_eq!(
            e.to_string(),
            "invalid override '-c topology.workers': expected key=value, e.g. -c topology.workers=3"
        );
        let e = load(None, &ov(&[" =3"])).unwrap_err();
        assert!(matches!(e, ConfigFileError::OverrideEmptyKey { .. }));
        assert!(e.to_string().contains("'-c  =3'"), "{e}");
        let e = load(None, &ov(&["supervisor.slots.ports=[6700,"])).unwrap_err();
        assert!(matches!(e, ConfigFileError::OverrideValue { .. }), "{e:?}");
        assert!(
            e.to_string().starts_with(
                "invalid override '-c supervisor.slots.ports=[6700,': the value is not valid YAML ("
            ),
            "{e}"
        );
        let e = load(None, &ov(&["a=1\n---\n2"])).unwrap_err();
        assert!(
            matches!(e, ConfigFileError::MultipleDocuments { .. }),
            "{e:?}"
        );
        let e = load(None, &ov(&["topology.alias=*x"])).unwrap_err();
        assert!(e.to_string().contains("-c topology.alias=*x"), "{e}");
    }

    #[test]
    fn unreadable_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-storm.yaml");
        let e = load(Some(&missing), &[]).unwrap_err();
        assert!(matches!(e, ConfigFileError::Read { .. }));
        let msg = e.to_string();
        assert!(msg.starts_with("cannot read config file "), "{msg}");
        assert!(msg.contains(&missing.display().to_string()), "{msg}");
        // A directory is not a readable file either.
        let e = load(Some(dir.path()), &[]).unwrap_err();
        assert!(e.to_string().contains(&dir.path().display().to_string()));
    }

    #[test]
    fn invalid_yaml_names_the_path_and_line() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        write!(f, "ui.port: 8080\nnimbus.seeds: [\"a\"\nx: 1\n").unwrap();
        let e = load(Some(f.path()), &[]).unwrap_err();
        let ConfigFileError::Yaml { origin, line, .. } = &e else {
            panic!("expected a YAML error, got {e:?}");
        };
        assert_eq!(origin, &f.path().display().to_string());
        assert!(*line >= 2, "line {line}");
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("{}: invalid YAML at line ", f.path().display())));
    }

    #[test]
    fn top_level_must_be_a_map_of_string_keys() {
        let e = load_str("- a\n- b\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "config text: the top level must be a map of config keys to values \
             (as in storm.yaml: `storm.zookeeper.port: 2181`), found a list"
        );
        assert!(matches!(
            load_str("just words").unwrap_err(),
            ConfigFileError::NotAMap { .. }
        ));
        let e = load_str("ui.port: 1\n42: x\n").unwrap_err();
        assert!(matches!(e, ConfigFileError::NonStringKey { .. }));
        assert!(e
            .to_string()
            .starts_with("config text: config key 42 is not a string"));
        let e = load_str("topology.map: {1: a}\n").unwrap_err();
        assert!(
            e.to_string().contains("1 (in the map of 'topology.map')"),
            "{e}"
        );
        let e = load_str("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(matches!(
            e,
            ConfigFileError::MultipleDocuments { count: 2, .. }
        ));
        let e = load_str("ui.port: 1\nui.port: 2\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("config text: invalid YAML at line 2"),
            "{e}"
        );
        assert!(e.to_string().contains("duplicated key"), "{e}");
        // Anchors and aliases are resolved.
        let c = load_str("topology.a: &x [1]\ntopology.b: *x\n").unwrap();
        assert_eq!(c.get("topology.b"), Some(&list(&[Value::Int(1)])));
    }

    #[test]
    fn empty_or_comment_only_text_gives_the_defaults() {
        assert_eq!(&load_str("").unwrap(), defaults());
        assert_eq!(&load_str("# nothing here\n").unwrap(), defaults());
        assert_eq!(&load_str("~").unwrap(), defaults());
    }

    #[test]
    fn single_scalars_are_one_element_lists() {
        let c = load_str(
            "storm.zookeeper.servers: zk1\nnimbus.seeds: n1\nsupervisor.slots.ports: 6700",
        )
        .unwrap();
        assert_eq!(c.zookeeper_servers().unwrap(), vec!["zk1"]);
        assert_eq!(c.zookeeper_connect_string().unwrap(), "zk1:2181");
        assert_eq!(c.nimbus_seeds().unwrap(), vec!["n1"]);
        assert_eq!(c.supervisor_slot_ports().unwrap(), vec![6700]);
    }

    #[test]
    fn connect_string_keeps_explicit_ports() {
        let c = load_str(
            "storm.zookeeper.servers: [\"zk1\", \"zk2:2190\", \"[::1]:2191\", \"::1\"]\n\
             storm.zookeeper.port: 2200",
        )
        .unwrap();
        assert_eq!(
            c.zookeeper_connect_string().unwrap(),
            "zk1:2200,zk2:2190,[::1]:2191,::1:2200"
        );
    }

    #[test]
    fn missing_keys_fall_back_to_defaults() {
        let mut c = Config::new();
        assert_eq!(c.zookeeper_connect_string().unwrap(), "localhost:2181");
        c.set(keys::UI_PORT, Value::Null);
        assert_eq!(c.ui_port().unwrap(), 8080);
        c.set(keys::STORM_ZOOKEEPER_PORT, "2300");
        assert_eq!(c.zookeeper_port().unwrap(), 2300);
        c.set(keys::STORM_ZOOKEEPER_ROOT, "/a/b/");
        assert_eq!(c.zookeeper_root().unwrap(), "/a/b");
        c.set(keys::STORM_ZOOKEEPER_ROOT, "/");
        assert_eq!(c.zookeeper_root().unwrap(), "/");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let err = |yaml: &str, read: fn(&Config) -> Result<(), ConfigError>| {
            let c = load_str(yaml).unwrap();
            let e = read(&c).unwrap_err();
            assert!(c.validate_cluster().is_err());
            e.to_string()
        };
        assert_eq!(
            err("storm.zookeeper.port: 70000", |c| c
                .zookeeper_port()
                .map(drop)),
            "config key 'storm.zookeeper.port' must be a port number between 1 and 65535, \
             found 70000"
        );
        assert_eq!(
            err("supervisor.slots.ports: []", |c| c
                .supervisor_slot_ports()
                .map(drop)),
            "config key 'supervisor.slots.ports' must be a non-empty list of distinct ports \
             between 1 and 65535, such as [6700, 6701], found []"
        );
        for bad in [
            "[0]",
            "[6700, 65536]",
            "[6700, x]",
            "[6700, 6700]",
            "{a: 1}",
        ] {
            let msg = err(&format!("supervisor.slots.ports: {bad}"), |c| {
                c.supervisor_slot_ports().map(drop)
            });
            assert!(
                msg.starts_with("config key 'supervisor.slots.ports'"),
                "{msg}"
            );
        }
        assert_eq!(
            err("storm.zookeeper.servers: [zk1, 3]", |c| c
                .zookeeper_connect_string()
                .map(drop)),
            "config key 'storm.zookeeper.servers' must be a non-empty list of host names, \
             such as [\"zk1\", \"zk2\"], found [zk1, 3]"
        );
        assert!(err("nimbus.seeds: []", |c| c.nimbus_seeds().map(drop))
            .starts_with("config key 'nimbus.seeds'"));
        assert!(err("nimbus.seeds: \"\"", |c| c.nimbus_seeds().map(drop))
            .starts_with("config key 'nimbus.seeds'"));
        assert_eq!(
            err("nimbus.task.timeout.secs: soon", |c| c
                .nimbus_task_timeout()
                .map(drop)),
            "config key 'nimbus.task.timeout.secs' must be a positive integer, found \"soon\""
        );
        assert!(err("worker.heartbeat.frequency.secs: 0", |c| c
            .worker_heartbeat_frequency()
            .map(drop))
        .contains("'worker.heartbeat.frequency.secs' must be a positive integer"));
        assert!(err("storm.zookeeper.session.timeout: 1.5", |c| c
            .zookeeper_session_timeout()
            .map(drop))
        .contains("'storm.zookeeper.session.timeout'"));
        assert!(err("nimbus.binary.max.bytes: -1", |c| c
            .nimbus_binary_max_bytes()
            .map(drop))
        .contains("'nimbus.binary.max.bytes'"));
        assert!(err("storm.zookeeper.root: squall", |c| c
            .zookeeper_root()
            .map(drop))
        .contains("must be an absolute ZooKeeper path"));
        assert!(err("storm.local.dir: [a]", |c| c.local_dir().map(drop))
            .contains("'storm.local.dir' must be a non-empty path"));
        assert!(err("ui.port: -1", |c| c.ui_port().map(drop))
            .contains("'ui.port' must be a port number between 0 and 65535"));
        assert!(
            err("nimbus.thrift.port: true", |c| c.nimbus_port().map(drop))
                .contains("'nimbus.thrift.port'")
        );
        assert!(err("dev.zookeeper.path: 3", |c| c
            .dev_zookeeper_path()
            .map(drop))
        .contains("'dev.zookeeper.path'"));
        assert!(err("drpc.servers: []", |c| c.drpc_servers().map(drop))
            .starts_with("config key 'drpc.servers'"));
        assert!(err("drpc.port: -1", |c| c.drpc_port().map(drop))
            .contains("'drpc.port' must be a port number between 0 and 65535"));
        assert!(
            err("drpc.http.port: 70000", |c| c.drpc_http_port().map(drop))
                .contains("'drpc.http.port' must be a port number between 0 and 65535, or -1")
        );
        assert!(err("drpc.request.timeout.secs: 0", |c| c
            .drpc_request_timeout()
            .map(drop))
        .contains("'drpc.request.timeout.secs' must be a positive integer"));
        assert!(err("squall.drpc.fetcher.timeout.secs: x", |c| c
            .drpc_fetcher_timeout()
            .map(drop))
        .contains("'squall.drpc.fetcher.timeout.secs'"));
    }

    #[test]
    fn drpc_side_ports_turn_off_with_minus_one() {
        let c = load_str("drpc.http.port: -1\ndrpc.invocations.port: 0").unwrap();
        assert_eq!(c.drpc_http_port().unwrap(), None);
        assert_eq!(c.drpc_invocations_port().unwrap(), Some(0));
        c.validate_cluster().unwrap();
    }

    #[test]
    fn port_zero_means_any_port_where_a_daemon_binds() {
        let c = load(None, &ov(&["ui.port=0", "nimbus.thrift.port=0"])).unwrap();
        assert_eq!(c.ui_port().unwrap(), 0);
        assert_eq!(c.nimbus_port().unwrap(), 0);
        let c = load(None, &ov(&["storm.zookeeper.port=0"])).unwrap();
        assert!(c.zookeeper_port().is_err());
    }
}
