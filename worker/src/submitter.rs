//! The entry point of a topology binary.
//!
//! A topology is a binary whose `main` builds the topology and hands it to
//! [`StormSubmitter::submit_topology`]. What that call does depends on how the binary
//! was started ([`LAUNCH_ENV`]):
//!
//! | started by | `SQUALL_LAUNCH` | the call |
//! |---|---|---|
//! | a user, directly | unset | refuses with an explanation (run without a name for local mode) |
//! | `squall jar <binary> args` | `submit` | uploads this binary to Nimbus and submits the topology |
//! | `squall local <binary> args` | `local` | runs it in a [`LocalCluster`] for `--local-ttl` seconds |
//! | a supervisor | `worker` | runs this worker's executors until Nimbus unassigns it |
//!
//! So the same `main` builds the topology everywhere.

use std::time::Duration;

use squall_api::{Config, Topology};
use squall_cluster::rpc::{NimbusClient, SubmitRequest};

use crate::{LocalCluster, WorkerError};

/// Set by `squall jar` (`submit`), `squall local` (`local`) and supervisors (`worker`).
pub const LAUNCH_ENV: &str = "SQUALL_LAUNCH";
/// Nimbus addresses (`host:port`, comma-separated), set by `squall jar`.
pub const NIMBUS_ENV: &str = "SQUALL_NIMBUS";
/// Configuration overrides (JSON object of dotted keys), set by `squall jar`/`local`.
pub const CONF_ENV: &str = "SQUALL_CONF";
/// Seconds to run in local mode, set by `squall local --local-ttl`.
pub const LOCAL_TTL_ENV: &str = "SQUALL_LOCAL_TTL";

/// How this process was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchMode {
    /// Run directly by a user.
    Direct,
    /// Run by `squall jar`: submit to Nimbus.
    Submit,
    /// Run by `squall local`: run in local mode.
    Local,
    /// Started by a supervisor: run assigned executors.
    Worker,
}

/// Reads [`LAUNCH_ENV`].
pub fn launch_mode() -> LaunchMode {
    match std::env::var(LAUNCH_ENV).as_deref() {
        Ok("submit") => LaunchMode::Submit,
        Ok("local") => LaunchMode::Local,
        Ok("worker") => LaunchMode::Worker,
        _ => LaunchMode::Direct,
    }
}

/// Submits topologies to a cluster (Storm's `StormSubmitter`).
pub struct StormSubmitter;

/// Parses the value of [`CONF_ENV`]: a JSON object of config keys; empty or absent is an
/// empty configuration.
pub fn parse_command_line_config(json: Option<&str>) -> Result<Config, WorkerError> {
    match json.map(str::trim) {
        None | Some("") => Ok(Config::new()),
        Some(json) => serde_json::from_str(json).map_err(|e| {
            WorkerError::CommandLineConfig(format!(
                "{e} (expected a JSON object of config keys, as `squall jar -c key=value` sets)"
            ))
        }),
    }
}

impl StormSubmitter {
    /// The configuration given on the command line of `squall jar` / `squall local`
    /// (`-c key=value`, `--config FILE`), as Storm's `Utils.readCommandLineOpts()` gives
    /// it to a topology's `main`: read from the `SQUALL_CONF` environment variable those
    /// commands set. An empty configuration when the binary was started otherwise.
    ///
    /// [`submit_topology`](Self::submit_topology) merges these options over the
    /// topology's configuration by itself; call this when `main` needs them earlier,
    /// e.g. to size the topology:
    ///
    /// ```no_run
    /// # fn main() -> Result<(), squall_worker::WorkerError> {
    /// use squall_worker::StormSubmitter;
    /// // squall jar ./my-topology name -c my.app.splitters=8
    /// let cli = StormSubmitter::command_line_config()?;
    /// let splitters = cli.get_u64("my.app.splitters")?.unwrap_or(2);
    /// # let _ = splitters; Ok(()) }
    /// ```
    pub fn command_line_config() -> Result<Config, WorkerError> {
        parse_command_line_config(std::env::var(CONF_ENV).ok().as_deref())
    }

    /// Submits `topology` as `name` (see the module docs for what happens in each
    /// launch mode). In worker mode this call runs the worker and returns when it stops.
    pub fn submit_topology(
        name: &str,
        conf: &Config,
        topology: &Topology,
    ) -> Result<(), WorkerError> {
        crate::local::validate_topology_name(name)?;
        let mut conf = conf.clone();
        conf.merge(&Self::command_line_config()?);
        conf.validate()?;
        topology.spec().validate()?;
        topology.spec().validate_with_conf(&conf)?;
        match launch_mode() {
            LaunchMode::Direct => Err(WorkerError::NotLaunched(format!(
                "cannot submit topology '{name}': this binary was not started by `squall jar`. \
                 Run `squall jar <binary> {name}` to submit it, or run it without arguments for local mode"
            ))),
            LaunchMode::Submit => submit_remote(name, &conf, topology),
            LaunchMode::Local => run_local(name, &conf, topology),
            LaunchMode::Worker => {
                let launch = crate::cluster_worker::read_launch()?;
                crate::cluster_worker::run(topology, launch)
            }
        }
    }
}

fn submit_remote(name: &str, conf: &Config, topology: &Topology) -> Result<(), WorkerError> {
    let nimbus: Vec<String> = std::env::var(NIMBUS_ENV)
        .unwrap_or_else(|_| "localhost:6627".to_owned())
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    // `squall jar` names the cluster secret's file when the cluster has one.
    let secret = match std::env::var_os(squall_cluster::rpc::SECRET_FILE_ENV) {
        Some(path) if !path.is_empty() => Some(
            squall_cluster::secret::Secret::from_file(std::path::Path::new(&path))
                .map_err(|e| WorkerError::NotLaunched(e.to_string()))?,
        ),
        _ => None,
    };
    let exe = std::env::current_exe()
        .map_err(|e| WorkerError::NotLaunched(format!("cannot find this binary: {e}")))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| WorkerError::NotLaunched(format!("cannot start a runtime: {e}")))?;
    let request = |sha: String| SubmitRequest {
        name: name.to_owned(),
        spec: topology.spec().clone(),
        conf: conf.clone(),
        binary_sha256: sha,
        args: std::env::args().skip(1).collect(),
        owner: std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned()),
    };
    let mut last: Option<squall_cluster::rpc::RpcError> = None;
    // While the Nimbus processes are electing a leader, ask again for a while.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        for addr in &nimbus {
            let client = NimbusClient::new(addr).with_secret(secret.clone());
            let result = rt.block_on(async {
                let sha = client.upload_binary(&exe).await?;
                client.submit(&request(sha)).await
            });
            match result {
                Ok(r) => {
                    println!("Submitted topology '{name}' as {}", r.topology_id);
                    return Ok(());
                }
                Err(e @ squall_cluster::rpc::RpcError::Unreachable { .. }) => last = Some(e),
                Err(e) => {
                    return Err(WorkerError::NotLaunched(format!(
                        "Nimbus refused topology '{name}': {e}"
                    )))
                }
            }
        }
        let electing = last.as_ref().is_some_and(|e| e.is_no_leader());
        if !electing || std::time::Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(WorkerError::NotLaunched(match last {
        Some(e) => e.to_string(),
        None => format!("no Nimbus address in {NIMBUS_ENV}"),
    }))
}

fn run_local(name: &str, conf: &Config, topology: &Topology) -> Result<(), WorkerError> {
    let ttl = std::env::var(LOCAL_TTL_ENV)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(20.0);
    let cluster = LocalCluster::new();
    cluster.submit_topology(name, conf, topology)?;
    println!("Running topology '{name}' in local mode for {ttl} s");
    std::thread::sleep(Duration::from_secs_f64(ttl.max(0.0)));
    let stats = cluster.kill_topology(name)?;
    for (component, s) in &stats.components {
        println!(
            "  {component:<12} emitted {:>10} acked {:>10} failed {:>6} executed {:>10}",
            s.emitted, s.acked, s.failed, s.executed
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_config_parses_the_json_that_squall_jar_sets() {
        assert_eq!(parse_command_line_config(None).unwrap(), Config::new());
        assert_eq!(parse_command_line_config(Some(" ")).unwrap(), Config::new());
        let c = parse_command_line_config(Some(
            r#"{"topology.workers": 3, "my.app.name": "x", "topology.debug": true}"#,
        ))
        .unwrap();
        assert_eq!(c.num_workers().unwrap(), 3);
        assert_eq!(c.get_str("my.app.name").unwrap(), Some("x"));
        assert!(c.debug().unwrap());
        let err = parse_command_line_config(Some("[1, 2]")).unwrap_err();
        assert!(matches!(err, WorkerError::CommandLineConfig(_)), "{err}");
        assert!(
            err.to_string()
                .starts_with("invalid command-line configuration in SQUALL_CONF: "),
            "{err}"
        );
    }
}
