//! A real Apache ZooKeeper server for development and tests.
//!
//! Storm's `storm dev-zookeeper` runs an in-process ZooKeeper; Squall runs the real one,
//! Apache ZooKeeper 3.8 from Debian's `zookeeper` package (installed by
//! `scripts/ensure-zookeeper.sh`), as a child process:
//!
//! ```text
//! java -Xmx256m -XX:+UseSerialGC -cp /usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar \
//!      org.apache.zookeeper.server.quorum.QuorumPeerMain <data dir>/zoo.cfg
//! ```
//!
//! The jar's manifest lists its dependencies; `slf4j-simple.jar` (same package set) is
//! added when present so that the server's log is written instead of dropped.
//!
//! - [`ZooKeeperServer::start`] writes `zoo.cfg` into the data dir, starts the server on
//!   the given port (or a free one) and returns once it serves requests.
//! - [`ZooKeeperServer::start_temp`] does the same in a temporary data dir, removed on drop:
//!   what tests use.
//! - [`run_dev_zookeeper`] is `squall dev-zookeeper`: a server in the foreground until
//!   Ctrl-C or SIGTERM.
//!
//! Dropping a [`ZooKeeperServer`] kills the java process, so a failing test leaves no
//! server behind (only a SIGKILL of the owning process can orphan it).
//!
//! ```no_run
//! use squall_cluster::dev_zookeeper::ZooKeeperServer;
//! let zk = ZooKeeperServer::start_temp().unwrap();
//! println!("ZooKeeper at {}", zk.connect_string());
//! assert_eq!(zk.four_letter_word("ruok").unwrap(), "imok");
//! zk.stop().unwrap();
//! ```

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use squall_api::{Config, ConfigError};
use tempfile::TempDir;

use crate::config::ClusterConfig;

/// Where Debian's `zookeeper` package installs the server jar.
pub const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";

/// The server's main class (standalone mode when the config names no quorum).
const MAIN_CLASS: &str = "org.apache.zookeeper.server.quorum.QuorumPeerMain";

/// How often [`ZooKeeperServer::start`] polls the server while it starts.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long [`ZooKeeperServer::stop`] waits after SIGTERM before it sends SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How many free ports [`ZooKeeperServer::start`] tries when another process takes the
/// one it picked before ZooKeeper binds it.
const FREE_PORT_ATTEMPTS: usize = 3;

/// Lines of the server's log quoted in errors.
const LOG_TAIL_LINES: usize = 20;

/// Why a ZooKeeper server could not be started, run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DevZooKeeperError {
    /// The ZooKeeper jar or `java` is missing.
    #[error(
        "Apache ZooKeeper is not installed: run scripts/ensure-zookeeper.sh \
         (apt-get install -y zookeeper); {missing} not found"
    )]
    NotInstalled {
        /// What is missing: the jar's path, or `java` on PATH.
        missing: String,
    },
    /// The data dir cannot be created or used.
    #[error("cannot use ZooKeeper data dir {path}: {source}")]
    DataDir {
        /// The data dir.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// `zoo.cfg` or the log file cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// No free port could be found on the bind address.
    #[error("cannot find a free port on {address}: {source}")]
    FreePort {
        /// The bind address.
        address: IpAddr,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// `java` could not be started.
    #[error("cannot start ZooKeeper ({java}): {source}")]
    Spawn {
        /// The java binary.
        java: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The server exited before it served requests.
    #[error("ZooKeeper exited ({status}) before it was ready; {log}")]
    ExitedEarly {
        /// How it exited.
        status: ExitStatus,
        /// The tail of its log, or where its output went.
        log: String,
    },
    /// The server did not serve requests in time (it has been killed).
    #[error("ZooKeeper did not answer `ruok` on {address} within {timeout:?}; {log}")]
    StartTimeout {
        /// The address polled.
        address: SocketAddr,
        /// How long it was given.
        timeout: Duration,
        /// The tail of its log, or where its output went.
        log: String,
    },
    /// A server that was running exited by itself.
    #[error("ZooKeeper (pid {pid}) exited ({status}); {log}")]
    Exited {
        /// Its process id.
        pid: u32,
        /// How it exited.
        status: ExitStatus,
        /// The tail of its log, or where its output went.
        log: String,
    },
    /// Waiting for or signalling the server process failed.
    #[error("cannot control ZooKeeper (pid {pid}): {source}")]
    Process {
        /// Its process id.
        pid: u32,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Signal handling for the foreground server could not be set up.
    #[error("cannot set up signal handling for dev-zookeeper: {0}")]
    Signals(#[source] io::Error),
    /// A configuration key has a bad value.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Where the server's stdout and stderr (its log) go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ServerOutput {
    /// `zookeeper.log` in the data dir, truncated at each start (the default).
    #[default]
    DataDirLog,
    /// The given file, truncated at each start.
    File(PathBuf),
    /// This process's stdout and stderr.
    Inherit,
    /// Nowhere.
    Discard,
}

/// How to start a [`ZooKeeperServer`].
#[derive(Clone, Debug)]
pub struct ZooKeeperOptions {
    /// ZooKeeper's data dir (snapshots and transaction logs); created if missing.
    /// `zoo.cfg` and, by default, `zookeeper.log` are written into it.
    pub data_dir: PathBuf,
    /// Client port; 0 picks a free one.
    pub port: u16,
    /// Address the client port binds to (default 127.0.0.1). An unspecified address
    /// (`0.0.0.0`, `::`) binds every interface.
    pub bind_address: IpAddr,
    /// Where the server's output goes.
    pub output: ServerOutput,
    /// The ZooKeeper jar (default [`ZOOKEEPER_JAR`]).
    pub jar: PathBuf,
    /// How long the server may take to serve requests (default 30 s).
    pub startup_timeout: Duration,
}

impl ZooKeeperOptions {
    /// Options for a server with data in `data_dir`, on a free port of 127.0.0.1, logging
    /// to `zookeeper.log` in the data dir.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            port: 0,
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            output: ServerOutput::DataDirLog,
            jar: PathBuf::from(ZOOKEEPER_JAR),
            startup_timeout: Duration::from_secs(30),
        }
    }
}

/// A running Apache ZooKeeper server (a `java` child process). Dropping it kills the
/// process; [`stop`](Self::stop) shuts it down gracefully.
#[derive(Debug)]
pub struct ZooKeeperServer {
    child: Option<Child>,
    pid: u32,
    address: SocketAddr,
    data_dir: PathBuf,
    log_file: Option<PathBuf>,
    // Dropped after `Drop::drop` has killed the process, so the server never sees its
    // data dir vanish.
    _temp_dir: Option<TempDir>,
}

/// Whether the ZooKeeper jar and `java` are installed.
pub fn zookeeper_installed() -> bool {
    Path::new(ZOOKEEPER_JAR).is_file() && find_java().is_some()
}

/// `$JAVA_HOME/bin/java` if it exists, else `java` from PATH.
fn find_java() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("JAVA_HOME") {
        let java = Path::new(&home).join("bin/java");
        if java.is_file() {
            return Some(java);
        }
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("java"))
        .find(|java| java.is_file())
}

/// The java binary and class path for `jar`, or why they are missing.
fn installation(jar: &Path) -> Result<(PathBuf, String), DevZooKeeperError> {
    if !jar.is_file() {
        return Err(DevZooKeeperError::NotInstalled {
            missing: jar.display().to_string(),
        });
    }
    let java = find_java().ok_or_else(|| DevZooKeeperError::NotInstalled {
        missing: "java (on PATH or in $JAVA_HOME/bin)".to_owned(),
    })?;
    // The jar's manifest Class-Path names its dependencies; a logging backend is the one
    // thing it leaves out (slf4j falls back to a no-op logger without one).
    let mut classpath = jar.display().to_string();
    let logger = jar.with_file_name("slf4j-simple.jar");
    if logger.is_file() {
        classpath.push(':');
        classpath.push_str(&logger.display().to_string());
    }
    Ok((java, classpath))
}

/// Sends a ZooKeeper four-letter word (`ruok`, `srvr`, `stat`, `mntr`) to `address` and
/// returns the answer.
pub fn four_letter_word(address: SocketAddr, word: &str, timeout: Duration) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(word.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// Whether the server at `address` answers `ruok` and serves requests (`ruok` answers
/// `imok` a little before the server has loaded its database; `srvr` tells).
fn serving(address: SocketAddr) -> bool {
    let timeout = Duration::from_secs(1);
    matches!(four_letter_word(address, "ruok", timeout), Ok(a) if a == "imok")
        && matches!(four_letter_word(address, "srvr", timeout),
            Ok(a) if a.starts_with("Zookeeper version"))
}

fn free_port(address: IpAddr) -> Result<u16, DevZooKeeperError> {
    let listener = TcpListener::bind((address, 0))
        .map_err(|source| DevZooKeeperError::FreePort { address, source })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| DevZooKeeperError::FreePort { address, source })
}

/// The last lines of the server's log, or where its output went.
fn describe_log(log_file: Option<&Path>) -> String {
    let Some(path) = log_file else {
        return "its output was not captured".to_owned();
    };
    match tail(path, LOG_TAIL_LINES) {
        Ok(t) if t.trim().is_empty() => format!("its log {} is empty", path.display()),
        Ok(t) => format!("last lines of its log {}:\n{t}", path.display()),
        Err(e) => format!("its log {} cannot be read: {e}", path.display()),
    }
}

fn tail(path: &Path, lines: usize) -> io::Result<String> {
    const MAX_BYTES: u64 = 8192;
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    Ok(all[all.len().saturating_sub(lines)..].join("\n"))
}

impl ZooKeeperServer {
    /// Starts a server and waits until it serves requests: it answers `ruok` with `imok`
    /// (polled every 50 ms, up to `opts.startup_timeout`). When the port is 0 a free one
    /// is picked, and another is tried if something takes it first.
    pub fn start(opts: ZooKeeperOptions) -> Result<ZooKeeperServer, DevZooKeeperError> {
        let mut attempt = 1;
        loop {
            match Self::start_once(&opts) {
                Err(DevZooKeeperError::ExitedEarly { log, .. })
                    if opts.port == 0
                        && attempt < FREE_PORT_ATTEMPTS
                        && log.contains("Address already in use") =>
                {
                    tracing::debug!("the free port picked for ZooKeeper was taken; retrying");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Starts a server in a new temporary data dir, on a free port of 127.0.0.1. The
    /// directory is removed when the server is dropped.
    pub fn start_temp() -> Result<ZooKeeperServer, DevZooKeeperError> {
        let temp = tempfile::Builder::new()
            .prefix("squall-zookeeper-")
            .tempdir()
            .map_err(|source| DevZooKeeperError::DataDir {
                path: std::env::temp_dir(),
                source,
            })?;
        let mut server = Self::start(ZooKeeperOptions::new(temp.path()))?;
        server._temp_dir = Some(temp);
        Ok(server)
    }

    fn start_once(opts: &ZooKeeperOptions) -> Result<ZooKeeperServer, DevZooKeeperError> {
        let (java, classpath) = installation(&opts.jar)?;
        let data_dir_error = |source| DevZooKeeperError::DataDir {
            path: opts.data_dir.clone(),
            source,
        };
        std::fs::create_dir_all(&opts.data_dir).map_err(data_dir_error)?;
        let data_dir = opts.data_dir.canonicalize().map_err(data_dir_error)?;
        if !data_dir.is_dir() {
            return Err(data_dir_error(io::Error::other("not a directory")));
        }

        let port = match opts.port {
            0 => free_port(opts.bind_address)?,
            p => p,
        };
        let wildcard = opts.bind_address.is_unspecified();
        let connect_ip = match opts.bind_address {
            IpAddr::V4(_) if wildcard => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) if wildcard => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let address = SocketAddr::new(connect_ip, port);

        let mut cfg = format!(
            "# Written by Squall; rewritten at every start.\n\
             tickTime=2000\n\
             dataDir={}\n\
             clientPort={port}\n\
             admin.enableServer=false\n\
             4lw.commands.whitelist=ruok,srvr,stat,mntr\n\
             maxSessionTimeout=60000\n",
            data_dir.display()
        );
        if !wildcard {
            cfg.push_str(&format!("clientPortAddress={}\n", opts.bind_address));
        }
        let cfg_path = data_dir.join("zoo.cfg");
        std::fs::write(&cfg_path, cfg).map_err(|source| DevZooKeeperError::Write {
            path: cfg_path.clone(),
            source,
        })?;

        let log_file = match &opts.output {
            ServerOutput::DataDirLog => Some(data_dir.join("zookeeper.log")),
            ServerOutput::File(path) => Some(path.clone()),
            ServerOutput::Inherit | ServerOutput::Discard => None,
        };
        let (stdout, stderr) = match (&opts.output, &log_file) {
            (_, Some(path)) => {
                let file = File::create(path).map_err(|source| DevZooKeeperError::Write {
                    path: path.clone(),
                    source,
                })?;
                let copy = file
                    .try_clone()
                    .map_err(|source| DevZooKeeperError::Write {
                        path: path.clone(),
                        source,
                    })?;
                (Stdio::from(file), Stdio::from(copy))
            }
            (ServerOutput::Inherit, None) => (Stdio::inherit(), Stdio::inherit()),
            _ => (Stdio::null(), Stdio::null()),
        };

        let child = Command::new(&java)
            .arg("-Xmx256m")
            .arg("-XX:+UseSerialGC")
            .arg("-Dorg.slf4j.simpleLogger.showDateTime=true")
            .arg("-cp")
            .arg(&classpath)
            .arg(MAIN_CLASS)
            .arg(&cfg_path)
            .current_dir(&data_dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| DevZooKeeperError::Spawn {
                java: java.clone(),
                source,
            })?;
        let mut server = ZooKeeperServer {
            pid: child.id(),
            child: Some(child),
            address,
            data_dir,
            log_file,
            _temp_dir: None,
        };
        tracing::debug!(pid = server.pid, %address, "ZooKeeper starting");
        // On any error `server` is dropped here, which kills the process.
        server.wait_until_serving(opts.startup_timeout)?;
        tracing::info!(pid = server.pid, %address, data_dir = %server.data_dir.display(),
            "ZooKeeper serving");
        Ok(server)
    }

    fn wait_until_serving(&mut self, timeout: Duration) -> Result<(), DevZooKeeperError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Err(DevZooKeeperError::ExitedEarly {
                    status,
                    log: describe_log(self.log_file.as_deref()),
                });
            }
            if serving(self.address) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(DevZooKeeperError::StartTimeout {
                    address: self.address,
                    timeout,
                    log: describe_log(self.log_file.as_deref()),
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The address clients connect to (`127.0.0.1:PORT` unless bound elsewhere).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The connect string for ZooKeeper clients, `"127.0.0.1:PORT"`.
    pub fn connect_string(&self) -> String {
        self.address.to_string()
    }

    /// The java process's id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The data dir (absolute), holding `zoo.cfg`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The file the server logs to, when its output goes to a file.
    pub fn log_file(&self) -> Option<&Path> {
        self.log_file.as_deref()
    }

    /// Sends a four-letter word (`ruok`, `srvr`, `stat`, `mntr`) and returns the answer.
    pub fn four_letter_word(&self, word: &str) -> io::Result<String> {
        four_letter_word(self.address, word, Duration::from_secs(5))
    }

    /// The exit status if the process has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, DevZooKeeperError> {
        let pid = self.pid;
        match &mut self.child {
            Some(child) => child
                .try_wait()
                .map_err(|source| DevZooKeeperError::Process { pid, source }),
            None => Ok(None),
        }
    }

    /// Shuts the server down: SIGTERM, then SIGKILL if it has not exited within 10 s.
    /// Returns once the process is gone.
    pub fn stop(mut self) -> Result<(), DevZooKeeperError> {
        let pid = self.pid;
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let process_error = |source| DevZooKeeperError::Process { pid, source };
        if child.try_wait().map_err(process_error)?.is_some() {
            return Ok(());
        }
        // std can only SIGKILL; `kill` (procps) sends SIGTERM so the server shuts down
        // cleanly. While `child` is not waited for, its pid cannot be reused.
        let termed = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + if termed { STOP_TIMEOUT } else { Duration::ZERO };
        loop {
            if child.try_wait().map_err(process_error)?.is_some() {
                tracing::info!(pid, "ZooKeeper stopped");
                return Ok(());
            }
            if Instant::now() >= deadline {
                tracing::warn!(pid, "ZooKeeper ignored SIGTERM; killing it");
                // An error here means it has exited meanwhile; `wait` tells.
                let _ = child.kill();
                child.wait().map_err(process_error)?;
                return Ok(());
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// SIGKILLs the process and reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ZooKeeperServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            tracing::debug!(pid = self.pid, "killing ZooKeeper on drop");
            self.kill();
        }
    }
}

/// `squall dev-zookeeper`: runs a ZooKeeper server in the foreground, as
/// `storm dev-zookeeper` does, with data in `dev.zookeeper.path` and the client port
/// `storm.zookeeper.port`, bound to every interface. Prints where it listens, then runs
/// until this process gets SIGINT (Ctrl-C), SIGTERM or SIGHUP, and stops the server
/// before returning. If the server exits by itself, that is an error with its log's
/// tail. Its log is `zookeeper.log` in the data dir.
pub fn run_dev_zookeeper(config: &Config) -> Result<(), DevZooKeeperError> {
    let opts = ZooKeeperOptions {
        port: config.zookeeper_port()?,
        bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        ..ZooKeeperOptions::new(config.dev_zookeeper_path()?)
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DevZooKeeperError::Signals)?;
    runtime.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        // Handlers first: a signal that arrives while the server starts is kept and acted
        // on as soon as it is up, instead of killing this process and orphaning java.
        let mut term = signal(SignalKind::terminate()).map_err(DevZooKeeperError::Signals)?;
        let mut int = signal(SignalKind::interrupt()).map_err(DevZooKeeperError::Signals)?;
        let mut hup = signal(SignalKind::hangup()).map_err(DevZooKeeperError::Signals)?;
        let mut server = ZooKeeperServer::start(opts)?;
        println!(
            "ZooKeeper (pid {}) listening on port {} (all interfaces), data dir {}, log {}; \
             Ctrl-C stops it",
            server.pid(),
            server.port(),
            server.data_dir().display(),
            server
                .log_file()
                .map_or_else(|| "-".to_owned(), |p| p.display().to_string()),
        );
        let mut poll = tokio::time::interval(Duration::from_millis(200));
        let signal = loop {
            tokio::select! {
                _ = term.recv() => break "SIGTERM",
                _ = int.recv() => break "SIGINT",
                _ = hup.recv() => break "SIGHUP",
                _ = poll.tick() => {
                    if let Some(status) = server.try_wait()? {
                        return Err(DevZooKeeperError::Exited {
                            pid: server.pid(),
                            status,
                            log: describe_log(server.log_file()),
                        });
                    }
                }
            }
        };
        println!("{signal}: stopping ZooKeeper (pid {})", server.pid());
        server.stop()
    })
}

#[cfg(test)]
mod tests {
    use std::io::BufRead;

    use super::*;

    fn require_zookeeper() {
        assert!(
            zookeeper_installed(),
            "Apache ZooKeeper is not installed: run scripts/ensure-zookeeper.sh"
        );
    }

    fn process_alive(pid: u32) -> bool {
        // A reaped process has no /proc entry (a zombie would still have one).
        Path::new(&format!("/proc/{pid}")).exists()
    }

    fn port_closed(address: SocketAddr) -> bool {
        TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_err()
    }

    #[test]
    fn starts_answers_and_stops() {
        require_zookeeper();
        let zk = ZooKeeperServer::start_temp().unwrap();
        let (pid, address) = (zk.pid(), zk.address());
        let data_dir = zk.data_dir().to_owned();
        assert_ne!(zk.port(), 0);
        assert_eq!(zk.connect_string(), format!("127.0.0.1:{}", zk.port()));
        assert!(process_alive(pid));

        // Raw four-letter words over a plain TcpStream.
        let mut s = TcpStream::connect(address).unwrap();
        s.write_all(b"ruok").unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "imok");
        let srvr = zk.four_letter_word("srvr").unwrap();
        assert!(srvr.starts_with("Zookeeper version: 3."), "{srvr}");
        assert!(srvr.contains("Mode: standalone"), "{srvr}");

        let cfg = std::fs::read_to_string(data_dir.join("zoo.cfg")).unwrap();
        assert!(cfg.contains(&format!("clientPort={}\n", zk.port())));
        assert!(cfg.contains("admin.enableServer=false\n"));
        assert!(cfg.contains("clientPortAddress=127.0.0.1\n"));
        let log = zk.log_file().unwrap().to_owned();
        assert!(std::fs::read_to_string(&log)
            .unwrap()
            .contains("binding to port"));

        zk.stop().unwrap();
        assert!(!process_alive(pid), "java (pid {pid}) still running");
        assert!(port_closed(address));
        assert!(!data_dir.exists(), "the temporary data dir is removed");
    }

    #[test]
    fn two_servers_at_once_and_drop_kills() {
        require_zookeeper();
        let a = ZooKeeperServer::start_temp().unwrap();
        let b = ZooKeeperServer::start_temp().unwrap();
        assert_ne!(a.port(), b.port());
        assert_ne!(a.pid(), b.pid());
        assert_eq!(a.four_letter_word("ruok").unwrap(), "imok");
        assert_eq!(b.four_letter_word("ruok").unwrap(), "imok");
        let (pid, address) = (b.pid(), b.address());
        drop(b);
        assert!(!process_alive(pid), "dropping the server kills java");
        assert!(port_closed(address));
        assert_eq!(a.four_letter_word("ruok").unwrap(), "imok");
        a.stop().unwrap();
    }

    #[test]
    fn keeps_data_across_restarts_in_a_given_dir_and_port() {
        require_zookeeper();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("elsewhere.log");
        let opts = ZooKeeperOptions {
            output: ServerOutput::File(log.clone()),
            ..ZooKeeperOptions::new(dir.path().join("zk"))
        };
        let zk = ZooKeeperServer::start(opts.clone()).unwrap();
        let port = zk.port();
        assert_eq!(zk.log_file(), Some(log.as_path()));
        zk.stop().unwrap();
        assert!(dir.path().join("zk/version-2").is_dir());
        assert!(std::fs::metadata(&log).unwrap().len() > 0);
        let zk = ZooKeeperServer::start(ZooKeeperOptions { port, ..opts }).unwrap();
        assert_eq!(zk.port(), port);
        assert_eq!(zk.four_letter_word("ruok").unwrap(), "imok");
    }

    #[test]
    fn a_taken_port_is_an_error_with_the_log_tail() {
        require_zookeeper();
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let opts = ZooKeeperOptions {
            port: taken.local_addr().unwrap().port(),
            ..ZooKeeperOptions::new(dir.path())
        };
        let e = ZooKeeperServer::start(opts).unwrap_err();
        assert!(matches!(e, DevZooKeeperError::ExitedEarly { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.starts_with("ZooKeeper exited ("), "{msg}");
        assert!(msg.contains("last lines of its log"), "{msg}");
        assert!(msg.contains("Address already in use"), "{msg}");
    }

    #[test]
    fn a_bad_data_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "not a directory").unwrap();
        let bad = file.join("data");
        let e = ZooKeeperServer::start(ZooKeeperOptions::new(&bad)).unwrap_err();
        assert!(matches!(e, DevZooKeeperError::DataDir { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "cannot use ZooKeeper data dir {}: ",
                bad.display()
            )),
            "{msg}"
        );
        let e = ZooKeeperServer::start(ZooKeeperOptions::new(&file)).unwrap_err();
        assert!(matches!(e, DevZooKeeperError::DataDir { .. }), "{e:?}");
    }

    #[test]
    fn a_missing_jar_says_how_to_install() {
        let dir = tempfile::tempdir().unwrap();
        let opts = ZooKeeperOptions {
            jar: dir.path().join("no-zookeeper.jar"),
            ..ZooKeeperOptions::new(dir.path())
        };
        let msg = ZooKeeperServer::start(opts).unwrap_err().to_string();
        assert!(
            msg.starts_with(
                "Apache ZooKeeper is not installed: run scripts/ensure-zookeeper.sh \
                 (apt-get install -y zookeeper)"
            ),
            "{msg}"
        );
        assert!(msg.contains("no-zookeeper.jar not found"), "{msg}");
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("zk.log");
        let text: String = (1..=50).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        let t = tail(&log, 3).unwrap();
        assert_eq!(t, "line 48\nline 49\nline 50");
        assert!(describe_log(Some(&log)).ends_with("line 50"));
        assert_eq!(describe_log(None), "its output was not captured");
    }

    /// Environment variable that makes [`dev_zookeeper_child`] run; set only by
    /// [`dev_zookeeper_runs_until_sigterm`].
    const CHILD_ENV: &str = "SQUALL_TEST_DEV_ZOOKEEPER_CHILD";

    /// Runs `squall dev-zookeeper`'s body in a child process of the test below.
    #[test]
    #[ignore = "run as a child process by dev_zookeeper_runs_until_sigterm"]
    fn dev_zookeeper_child() {
        let Ok(overrides) = std::env::var(CHILD_ENV) else {
            return;
        };
        let overrides: Vec<String> = overrides.split('\n').map(str::to_owned).collect();
        let config = crate::config::load(None, &overrides).unwrap();
        run_dev_zookeeper(&config).unwrap();
        println!("dev-zookeeper returned Ok");
    }

    /// Kills a child process on drop (and the java it started, if it was orphaned).
    struct ChildGuard(Child, Option<u32>);

    impl Drop for ChildGuard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            if let Some(pid) = self.1 {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(MAIN_CLASS) {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
            }
        }
    }

    #[test]
    fn dev_zookeeper_runs_until_sigterm() {
        require_zookeeper();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
        let overrides = format!(
            "dev.zookeeper.path={}\nstorm.zookeeper.port={port}",
            dir.path().join("dev-zk").display()
        );
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "dev_zookeeper::tests::dev_zookeeper_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, overrides)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut guard = ChildGuard(child, None);
        // Read the child's output on a thread, so a silent child fails the test instead
        // of hanging it.
        let stdout = guard.0.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let next_line = || rx.recv_timeout(Duration::from_secs(60)).ok();
        // The test harness prints its own "test … ... " before the line.
        const MARK: &str = "ZooKeeper (pid ";
        let listening = std::iter::from_fn(next_line)
            .find_map(|l| l.find(MARK).map(|at| l[at..].to_owned()))
            .expect("dev-zookeeper printed where it listens");
        let java_pid: u32 = listening[MARK.len()..]
            .split(')')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        guard.1 = Some(java_pid);
        assert!(
            listening.contains(&format!("listening on port {port}")),
            "{listening}"
        );
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        assert_eq!(
            four_letter_word(address, "ruok", Duration::from_secs(5)).unwrap(),
            "imok"
        );
        assert!(dir.path().join("dev-zk/zoo.cfg").is_file());

        let status = Command::new("kill")
            .args(["-TERM", &guard.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let rest: Vec<String> = std::iter::from_fn(next_line).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = guard.0.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "dev-zookeeper ignored SIGTERM");
            std::thread::sleep(POLL_INTERVAL);
        };
        assert!(status.success(), "{status}; output: {rest:?}");
        assert!(
            rest.iter().any(|l| l == "dev-zookeeper returned Ok"),
            "output: {rest:?}"
        );
        assert!(
            !process_alive(java_pid),
            "java (pid {java_pid}) left behind"
        );
        assert!(port_closed(address));
    }
}
