//! `squall`: the command line, in the shape of Storm's `bin/storm`.
//!
//! The binary only parses arguments and dispatches: daemons live in their crates
//! (`squall-nimbus`, `squall-supervisor`, `squall-ui`, `squall-drpc`), submission in the
//! topology binary itself, the operator's commands (`get-errors`, `monitor`,
//! `set_log_level`) in `operate`, `drpc-client` in `drpc`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
use squall_api::Config;
use squall_cluster::config;
use squall_cluster::config::keys;
use squall_cluster::rpc::{
    nimbus_addresses, LogLevelRequest, NimbusClient, RebalanceCommand, RpcError, SECRET_FILE_ENV,
};
use squall_cluster::secret::{Secret, SECRET_FILE_KEY};
use squall_cluster::state::RebalanceRequest;
use squall_worker::local_nimbus::LOCAL_NIMBUS_PORT_ENV;
use squall_worker::submitter::{CONF_ENV, LAUNCH_ENV, LOCAL_TTL_ENV, NIMBUS_ENV};
use tokio_util::sync::CancellationToken;

mod drpc;
mod operate;

#[derive(Parser)]
#[command(
    name = "squall",
    version,
    about = "Squall: Apache Storm's model of realtime computation, in Rust",
    after_help = "Config: --config FILE (Storm's storm.yaml keys; default ~/.squall/storm.yaml when present), then -c key=value overrides."
)]
struct Cli {
    /// Override a config value; repeatable (`-c topology.workers=2`).
    #[arg(short = 'c', value_name = "KEY=VALUE", global = true)]
    conf: Vec<String>,
    /// A YAML config file with Storm's dotted keys.
    #[arg(long = "config", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a topology binary so that it submits itself to Nimbus.
    Jar {
        /// The topology binary.
        binary: PathBuf,
        /// Its arguments (Storm's examples take the topology name first).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run a topology binary in local mode.
    Local {
        /// Seconds to run before killing the topology.
        #[arg(long = "local-ttl", default_value_t = 20.0)]
        local_ttl: f64,
        /// Serve the web UI (on `ui.port`, 8080 unless `-c ui.port=N`) for the local
        /// topology while it runs.
        #[arg(long)]
        ui: bool,
        /// The topology binary.
        binary: PathBuf,
        /// Its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List the running topologies.
    List,
    /// Kill a topology: spouts are deactivated for the wait, then the workers stop.
    Kill {
        /// Topology name.
        name: String,
        /// Seconds to wait (default: the topology's message timeout).
        #[arg(short = 'w', long = "wait")]
        wait: Option<u64>,
    },
    /// Resume a topology's spouts.
    Activate {
        /// Topology name.
        name: String,
    },
    /// Pause a topology's spouts.
    Deactivate {
        /// Topology name.
        name: String,
    },
    /// Re-spread a topology, optionally with another number of workers or executors.
    Rebalance {
        /// Topology name.
        name: String,
        /// Seconds to wait with spouts paused first (default: the message timeout).
        #[arg(short = 'w', long = "wait")]
        wait: Option<u64>,
        /// New number of workers.
        #[arg(short = 'n', long = "num-workers")]
        num_workers: Option<u32>,
        /// New parallelism of a component: `-e component=n`; repeatable.
        #[arg(short = 'e', long = "executors", value_name = "COMPONENT=N")]
        executors: Vec<String>,
    },
    /// Print the last error of each component of a topology.
    #[command(name = "get-errors")]
    GetErrors {
        /// Topology name (or id).
        name: String,
        /// Print Storm's JSON (`{"Topology Name": ..., "Comp-Errors": {...}}`).
        #[arg(long)]
        json: bool,
    },
    /// Show a topology's throughput live, one line per interval, until Ctrl-C.
    Monitor {
        /// Topology name (or id).
        name: String,
        /// Seconds between lines.
        #[arg(short = 'i', long = "interval", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
        interval: u64,
        /// Only this component (default: all components summed).
        #[arg(short = 'm', long = "component")]
        component: Option<String>,
        /// The output stream to count.
        #[arg(short = 's', long = "stream", default_value = "default")]
        stream: String,
        /// What to count.
        #[arg(short = 'w', long = "watch", value_enum, default_value_t = operate::Watch::Emitted)]
        watch: operate::Watch,
        /// Stop after this many lines.
        #[arg(long = "count")]
        count: Option<u64>,
    },
    /// Change a running topology's log levels (-l ROOT=DEBUG:30, -r ROOT).
    ///
    /// Prints the levels in force afterwards; without -l or -r, only prints them.
    #[command(name = "set_log_level", visible_alias = "set-log-level")]
    SetLogLevel {
        /// Topology name (or id).
        name: String,
        /// Set a logger (ROOT or a tracing target) to TRACE, DEBUG, INFO, WARN, ERROR or
        /// OFF, for TIMEOUT_SECS seconds when given; repeatable.
        #[arg(short = 'l', long = "level", value_name = "LOGGER=LEVEL[:TIMEOUT_SECS]", value_parser = operate::parse_log_setting)]
        set: Vec<(String, squall_cluster::rpc::LogLevelSetting)>,
        /// Put a logger back to the workers' default; repeatable.
        #[arg(short = 'r', long = "reset", value_name = "LOGGER")]
        reset: Vec<String>,
    },
    /// Run Nimbus, the master daemon.
    Nimbus,
    /// Run a supervisor on this machine.
    Supervisor,
    /// Run the web UI with Storm's REST API and Prometheus `/metrics` (ui.host:ui.port).
    Ui,
    /// Serve this machine's worker logs (`logviewer.host`:`logviewer.port`).
    Logviewer,
    /// Run a development ZooKeeper (data in dev.zookeeper.path, port storm.zookeeper.port).
    DevZookeeper,
    /// Run the DRPC server: Squall's DRPC API on drpc.port (and drpc.invocations.port),
    /// Storm's DRPC HTTP on drpc.http.port.
    Drpc,
    /// Call DRPC functions on drpc.servers and print `FUNCTION "ARGUMENT" => "RESULT"` per
    /// call: `-f FUNCTION ARGUMENT...`, or `FUNCTION ARGUMENT` pairs.
    ///
    /// Stops with a non-zero exit at the first error (a timeout, a request the topology
    /// failed, no server reachable).
    #[command(name = "drpc-client")]
    DrpcClient {
        /// Call this function with each argument.
        #[arg(short = 'f', long = "function")]
        function: Option<String>,
        /// The arguments (with -f), or FUNCTION ARGUMENT pairs.
        #[arg(value_name = "ARGS", allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Print the version.
    Version,
}

/// Namespaces of cluster keys: an unknown key in one of them is a typo, refused.
const CLUSTER_NAMESPACES: &[&str] = &[
    "storm.",
    "nimbus.",
    "supervisor.",
    "worker.",
    "ui.",
    "logviewer.",
    "drpc.",
    "squall.",
    "dev.",
];

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let default = std::env::var_os("HOME")
        .map(|h| Path::new(&h).join(".squall/storm.yaml"))
        .filter(|p| p.is_file());
    let file = cli.config.clone().or(default);
    // `-c` given to `jar`/`local` is the topology's configuration too (as with
    // `storm jar`), which is open: a key outside the cluster's namespaces is the
    // topology's own (e.g. `-c my.app.threshold=3`) and only travels to it.
    let topology_args = matches!(cli.cmd, Cmd::Jar { .. } | Cmd::Local { .. });
    let mut cluster_overrides = Vec::new();
    for arg in &cli.conf {
        let (key, _) = config::parse_override(arg)?;
        let own =
            !config::is_known_key(&key) && !CLUSTER_NAMESPACES.iter().any(|ns| key.starts_with(ns));
        if !(topology_args && own) {
            cluster_overrides.push(arg.clone());
        }
    }
    Ok(config::load(file.as_deref(), &cluster_overrides)?)
}

fn overrides_json(cli: &Cli) -> anyhow::Result<String> {
    let mut c = Config::new();
    for arg in &cli.conf {
        let (k, v) = config::parse_override(arg)?;
        c.set(k, v);
    }
    Ok(serde_json::to_string(&c)?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Runs `f` against the first Nimbus of `nimbus.seeds` that answers (a standby passes
/// writes on to the leader), with the cluster secret when one is configured. While a
/// leader election is under way, tries again for up to 15 s.
fn with_nimbus<T>(
    conf: &Config,
    f: impl AsyncFn(&NimbusClient) -> Result<T, RpcError>,
) -> anyhow::Result<T> {
    let rt = runtime()?;
    let secret = Secret::load(conf)?;
    let addrs = nimbus_addresses(conf)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let mut last = None;
        for addr in &addrs {
            let client = NimbusClient::new(addr).with_secret(secret.clone());
            match rt.block_on(f(&client)) {
                Ok(v) => return Ok(v),
                Err(e @ RpcError::Unreachable { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        match last {
            Some(e) if e.is_no_leader() && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            Some(e) => return Err(e.into()),
            None => bail!("no Nimbus configured in nimbus.seeds"),
        }
    }
}

/// The web UI of `squall local --ui`: a UI daemon on this process's own runtime that reads
/// the topology binary's local cluster through the Nimbus API its `LocalCluster` serves
/// on a loopback port (named to it by [`LOCAL_NIMBUS_PORT_ENV`]). Stops when dropped.
struct LocalUi {
    token: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LocalUi {
    fn start(conf: &Config, envs: &mut Vec<(&'static str, String)>) -> anyhow::Result<LocalUi> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("cannot find a free loopback port for the local cluster's API")?
            .port();
        envs.push((LOCAL_NIMBUS_PORT_ENV, port.to_string()));
        let mut ui_conf = conf.clone();
        ui_conf.set(keys::NIMBUS_SEEDS, format!("127.0.0.1:{port}"));
        // The local cluster's API is on loopback and has no secret.
        ui_conf.remove(SECRET_FILE_KEY);
        use squall_cluster::config::ClusterConfig;
        match ui_conf.ui_port()? {
            0 => eprintln!("Web UI: on a free port (see the log line 'UI listening on')"),
            p => eprintln!("Web UI: http://localhost:{p}/ while the topology runs"),
        }
        let rt = runtime()?;
        let token = CancellationToken::new();
        let stop = token.clone();
        let thread = std::thread::Builder::new()
            .name("squall-local-ui".into())
            .spawn(move || {
                if let Err(e) = rt.block_on(squall_ui::start(ui_conf, stop)) {
                    eprintln!("error: the web UI stopped: {}", one_line(&e.into()));
                }
            })?;
        Ok(LocalUi {
            token,
            thread: Some(thread),
        })
    }
}

impl Drop for LocalUi {
    fn drop(&mut self) {
        self.token.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run_binary(binary: &Path, args: &[String], envs: &[(&str, String)]) -> anyhow::Result<ExitCode> {
    if !binary.is_file() {
        bail!("topology binary {} does not exist", binary.display());
    }
    let status = std::process::Command::new(binary)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .status()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

fn init_logging(default: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Runs a daemon until Ctrl-C or SIGTERM.
fn run_daemon<F, Fut, E>(conf: Config, start: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Config, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let rt = runtime()?;
    rt.block_on(async {
        let token = CancellationToken::new();
        let t = token.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            t.cancel();
        });
        start(conf, token).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The error and its causes on one line, each cause only once: the daemons' errors
/// already name their cause in their own message.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let conf = load_config(&cli)?;
    match &cli.cmd {
        Cmd::Jar { binary, args } => {
            let nimbus = nimbus_addresses(&conf)?.join(",");
            let mut envs = vec![
                (LAUNCH_ENV, "submit".into()),
                (NIMBUS_ENV, nimbus),
                (CONF_ENV, overrides_json(&cli)?),
            ];
            // The submitter proves knowledge of the secret; check it is usable here.
            if Secret::load(&conf)?.is_some() {
                if let Some(file) = conf.get_str(SECRET_FILE_KEY)? {
                    envs.push((SECRET_FILE_ENV, file.trim().to_owned()));
                }
            }
            run_binary(binary, args, &envs)
        }
        Cmd::Local {
            local_ttl,
            ui,
            binary,
            args,
        } => {
            let mut envs = vec![
                (LAUNCH_ENV, "local".into()),
                (LOCAL_TTL_ENV, local_ttl.to_string()),
                (CONF_ENV, overrides_json(&cli)?),
            ];
            if !*ui {
                return run_binary(binary, args, &envs);
            }
            let _ui = LocalUi::start(&conf, &mut envs)?;
            run_binary(binary, args, &envs)
        }
        Cmd::List => {
            let list = with_nimbus(&conf, async |c| c.list().await)?;
            if list.is_empty() {
                println!("No topologies running.");
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<20} {:<11} {:>9} {:>11} {:>11} {:<32} {:<10}",
                "Topology_name",
                "Status",
                "Num_tasks",
                "Num_workers",
                "Uptime_secs",
                "Topology_Id",
                "Owner"
            );
            println!("{}", "-".repeat(110));
            for t in list {
                println!(
                    "{:<20} {:<11} {:>9} {:>11} {:>11} {:<32} {:<10}",
                    t.name,
                    t.status.to_string(),
                    t.num_tasks,
                    t.num_workers,
                    t.uptime_secs,
                    t.id,
                    t.owner
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Kill { name, wait } => {
            with_nimbus(&conf, async |c| c.kill(name, *wait).await)?;
            println!("Killed topology: {name}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Activate { name } => {
            with_nimbus(&conf, async |c| c.activate(name).await)?;
            println!("Activated topology: {name}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Deactivate { name } => {
            with_nimbus(&conf, async |c| c.deactivate(name).await)?;
            println!("Deactivated topology: {name}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Rebalance {
            name,
            wait,
            num_workers,
            executors,
        } => {
            let mut request = RebalanceRequest {
                num_workers: *num_workers,
                ..Default::default()
            };
            for e in executors {
                let (component, n) = e
                    .split_once('=')
                    .ok_or_else(|| anyhow!("-e takes component=parallelism, got '{e}'"))?;
                let n: u32 = n
                    .trim()
                    .parse()
                    .map_err(|_| anyhow!("-e {e}: parallelism must be a positive integer"))?;
                request.executors.insert(component.trim().to_owned(), n);
            }
            let cmd = RebalanceCommand {
                wait_secs: *wait,
                request,
            };
            with_nimbus(&conf, async |c| c.rebalance(name, &cmd).await)?;
            println!("Topology {name} is rebalancing");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::GetErrors { name, json } => {
            let info = with_nimbus(&conf, async |c| c.info(name).await)?;
            print!(
                "{}",
                operate::format_errors(&info.summary.name, &info.errors, *json)
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Monitor {
            name,
            interval,
            component,
            stream,
            watch,
            count,
        } => {
            let args = operate::MonitorArgs {
                name,
                interval: std::time::Duration::from_secs(*interval),
                component: component.as_deref(),
                stream,
                watch: *watch,
                count: *count,
            };
            operate::monitor(&args, || {
                with_nimbus(&conf, async |c| c.page(args.name).await)
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::SetLogLevel { name, set, reset } => {
            let levels = if set.is_empty() && reset.is_empty() {
                with_nimbus(&conf, async |c| c.log_levels(name).await)?
            } else {
                let req = LogLevelRequest {
                    set: set.iter().cloned().collect(),
                    reset: reset.clone(),
                };
                with_nimbus(&conf, async |c| c.set_log_levels(name, &req).await)?
            };
            print!("{}", operate::format_levels(name, &levels));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Nimbus => {
            init_logging("info");
            run_daemon(conf, squall_nimbus::start)
        }
        Cmd::Supervisor => {
            init_logging("info");
            run_daemon(conf, squall_supervisor::start)
        }
        Cmd::Ui => {
            init_logging("info");
            run_daemon(conf, squall_ui::start)
        }
        Cmd::Logviewer => {
            init_logging("info");
            run_daemon(conf, squall_ui::logviewer::start)
        }
        Cmd::DevZookeeper => {
            squall_cluster::dev_zookeeper::run_dev_zookeeper(&conf)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Drpc => {
            init_logging("info");
            run_daemon(conf, squall_drpc::server::start)
        }
        Cmd::DrpcClient { function, args } => {
            drpc::run(&conf, function.as_deref(), args)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Version => {
            println!("Squall {}", squall_cluster::VERSION);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Like Storm's `bin/storm`, `-c key=value` and `--config file` are accepted anywhere,
/// also after a topology binary (`squall jar ./wc name -c topology.workers=3`): they are
/// moved in front of the subcommand before parsing.
fn hoist_config_flags(args: Vec<String>) -> Vec<String> {
    let mut front = Vec::new();
    let mut rest = Vec::new();
    let mut it = args.into_iter();
    if let Some(program) = it.next() {
        front.push(program);
    }
    while let Some(a) = it.next() {
        if a == "-c" || a == "--config" {
            front.push(a);
            if let Some(v) = it.next() {
                front.push(v);
            }
        } else if a.starts_with("--config=")
            || (a.starts_with("-c") && a.len() > 2 && !a.starts_with("--"))
        {
            front.push(a);
        } else {
            rest.push(a);
        }
    }
    front.extend(rest);
    front
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(hoist_config_flags(std::env::args().collect()));
    if !matches!(
        cli.cmd,
        Cmd::Nimbus | Cmd::Supervisor | Cmd::Ui | Cmd::Logviewer | Cmd::Drpc
    ) {
        init_logging("warn");
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::hoist_config_flags;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn config_flags_move_in_front_of_the_subcommand() {
        assert_eq!(
            hoist_config_flags(v(&[
                "squall", "jar", "./wc", "name", "-c", "a=1", "--config", "f.yaml", "x"
            ])),
            v(&["squall", "-c", "a=1", "--config", "f.yaml", "jar", "./wc", "name", "x"])
        );
        assert_eq!(
            hoist_config_flags(v(&["squall", "list", "-cb=2", "--config=g.yaml"])),
            v(&["squall", "-cb=2", "--config=g.yaml", "list"])
        );
        assert_eq!(
            hoist_config_flags(v(&["squall", "list"])),
            v(&["squall", "list"])
        );
    }
}
