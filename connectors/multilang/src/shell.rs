//! What shell bolts and spouts share: the component's declaration, starting and
//! restarting the subprocess (with a back-off), the messages that mean the same for
//! both (log, error, metrics), and checking an emit before it reaches the runtime.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use squall_api::{
    BoxError, Config, Fields, Grouping, OutputCollector, OutputFieldsDeclarer,
    SpoutOutputCollector, TaskId, TopologyContext,
};

use crate::process::{Launch, ShellProcess};
use crate::protocol::{self, EmitMsg, ShellMsg};
use crate::resources::{ensure_venv, WorkDir};
use crate::{Resources, TOPOLOGY_SHELLBOLT_MAX_PENDING, TOPOLOGY_SUBPROCESS_TIMEOUT_SECS};

/// Storm's default of `topology.shellbolt.max.pending`.
pub(crate) const DEFAULT_MAX_PENDING: u64 = 100;
/// The default subprocess timeout: Storm falls back to `supervisor.worker.timeout.secs`
/// (30 s).
pub(crate) const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// First restart delay; doubled on every failure in a row, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A subprocess that ran this long before failing starts the back-off afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// A shell component's declaration (what `Clone` copies to every task).
#[derive(Clone, Debug, Default)]
pub(crate) struct ShellSpec {
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub resources: Option<Resources>,
    pub outputs: Vec<(String, Fields, bool)>,
}

impl ShellSpec {
    pub fn new<I, S>(command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ShellSpec {
            command: command.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    pub fn declare(&mut self, stream: String, fields: Fields, direct: bool) {
        self.outputs.retain(|(s, _, _)| *s != stream);
        self.outputs.push((stream, fields, direct));
    }

    pub fn declare_outputs(&self, d: &mut OutputFieldsDeclarer) {
        for (stream, fields, direct) in &self.outputs {
            if *direct {
                d.declare_direct_stream(stream.as_str(), fields.clone());
            } else {
                d.declare_stream(stream.as_str(), fields.clone());
            }
        }
    }
}

/// Where errors and gauges go: the bolt's or the spout's collector.
pub(crate) trait Reporter {
    fn report(&mut self, msg: &str);
    fn gauge(&mut self, name: &str, value: i64);
}

impl Reporter for OutputCollector<'_> {
    fn report(&mut self, msg: &str) {
        self.report_error(&msg)
    }
    fn gauge(&mut self, name: &str, value: i64) {
        self.set_gauge(name, value)
    }
}

impl Reporter for SpoutOutputCollector<'_> {
    fn report(&mut self, msg: &str) {
        self.report_error(&msg)
    }
    fn gauge(&mut self, name: &str, value: i64) {
        self.set_gauge(name, value)
    }
}

/// Writes a subprocess's log message into the worker log at its level (0 trace ...
/// 4 error), with its component, task and pid.
pub(crate) fn log_line(component: &str, task: u32, pid: u32, level: i64, msg: &str) {
    const T: &str = "squall_multilang::shell";
    match level {
        i64::MIN..=0 => tracing::trace!(target: T, component, task, pid, "{msg}"),
        1 => tracing::debug!(target: T, component, task, pid, "{msg}"),
        2 => tracing::info!(target: T, component, task, pid, "{msg}"),
        3 => tracing::warn!(target: T, component, task, pid, "{msg}"),
        _ => tracing::error!(target: T, component, task, pid, "{msg}"),
    }
}

struct StreamRule {
    fields: usize,
    direct: bool,
    /// For a direct stream: the tasks subscribed to it with direct grouping.
    direct_targets: Vec<TaskId>,
}

/// The subprocess of one task, restarted when it fails.
pub(crate) struct Shell {
    /// "shell bolt 'split' task 3", to start error messages with.
    pub label: String,
    launch: Launch,
    /// The running subprocess, `None` while it is down.
    pub process: Option<ShellProcess>,
    /// Bumped at every successful start.
    pub generation: u64,
    /// `topology.subprocess.timeout.secs`.
    pub timeout: Duration,
    failures: u32,
    next_start: Instant,
    streams: HashMap<String, StreamRule>,
    gauges_refused: HashSet<String>,
    unknown_commands: HashSet<String>,
    unreported: Vec<String>,
    _dir: WorkDir,
}

impl Shell {
    /// Prepares a task's subprocess: unpacks resources, makes the Python env, builds
    /// the handshake and starts the subprocess. Only setup errors (resources, venv,
    /// bad configuration) are returned; a subprocess that fails to start is reported
    /// at the first chance and restarted with a back-off.
    pub fn prepare(
        kind: &str,
        spec: &ShellSpec,
        conf: &Config,
        ctx: &TopologyContext,
        heartbeat: Option<Duration>,
    ) -> Result<Shell, BoxError> {
        let component = ctx.this_component_id().to_string();
        let task = ctx.this_task_id().0;
        let label = format!("shell {kind} '{component}' task {task}");
        if spec.command.is_empty() {
            return Err(format!("{label}: the command is empty").into());
        }
        let timeout_secs = match conf.get_u64(TOPOLOGY_SUBPROCESS_TIMEOUT_SECS)? {
            Some(s) => s,
            None => conf
                .get_u64("supervisor.worker.timeout.secs")?
                .unwrap_or(DEFAULT_TIMEOUT_SECS),
        };
        if timeout_secs == 0 {
            return Err(
                format!("{label}: {TOPOLOGY_SUBPROCESS_TIMEOUT_SECS} must be at least 1").into(),
            );
        }
        let max_pending = conf
            .get_u64(TOPOLOGY_SHELLBOLT_MAX_PENDING)?
            .unwrap_or(DEFAULT_MAX_PENDING);
        if max_pending == 0 {
            return Err(
                format!("{label}: {TOPOLOGY_SHELLBOLT_MAX_PENDING} must be at least 1").into(),
            );
        }
        let dir = WorkDir::acquire(ctx.this_worker_port().is_none())
            .map_err(|e| format!("{label}: {e}"))?;
        let mut command = spec.command.clone();
        let mut env = vec![("PYTHONIOENCODING".to_owned(), "utf-8".to_owned())];
        let mut cwd = None;
        if let Some(res) = &spec.resources {
            cwd = Some(
                res.unpack(dir.path())
                    .map_err(|e| format!("{label}: {e}"))?,
            );
            if let Some(reqs) = res.requirements() {
                let venv = ensure_venv(reqs).map_err(|e| format!("{label}: {e}"))?;
                let bin = venv.join("bin");
                if matches!(command[0].as_str(), "python" | "python3") {
                    command[0] = bin.join("python").to_string_lossy().into_owned();
                }
                let path = std::env::var("PATH").unwrap_or_default();
                env.push(("PATH".into(), format!("{}:{path}", bin.display())));
                env.push(("VIRTUAL_ENV".into(), venv.to_string_lossy().into_owned()));
            }
        }
        env.extend(spec.env.iter().cloned());

        let me = ctx.this_component_id().as_str();
        let mut streams = HashMap::new();
        if let Some(c) = ctx.spec().components.get(me) {
            for (stream, decl) in &c.outputs {
                let mut direct_targets = Vec::new();
                if decl.direct {
                    for (target, grouping) in ctx.spec().subscribers(me, stream.as_str()) {
                        if *grouping == Grouping::Direct {
                            direct_targets.extend_from_slice(ctx.component_tasks(target.as_str()));
                        }
                    }
                }
                streams.insert(
                    stream.to_string(),
                    StreamRule {
                        fields: decl.fields.len(),
                        direct: decl.direct,
                        direct_targets,
                    },
                );
            }
        }
        let pid_dir = dir.pid_dir();
        let handshake = protocol::handshake(
            conf,
            &pid_dir.to_string_lossy(),
            protocol::context_json(ctx),
        );
        let launch = Launch {
            command,
            env,
            cwd,
            handshake,
            heartbeat,
            max_pending: max_pending.min(1 << 20) as usize,
            timeout: Duration::from_secs(timeout_secs),
            component,
            task,
        };
        let mut shell = Shell {
            label,
            timeout: launch.timeout,
            launch,
            process: None,
            generation: 0,
            failures: 0,
            next_start: Instant::now(),
            streams,
            gauges_refused: HashSet::new(),
            unknown_commands: HashSet::new(),
            unreported: Vec::new(),
            _dir: dir,
        };
        if let Err(e) = shell.start() {
            // No collector yet: reported with the first tuple or tick.
            tracing::error!("{e}");
            shell.unreported.push(e);
        }
        Ok(shell)
    }

    fn start(&mut self) -> Result<(), String> {
        match ShellProcess::start(&self.launch) {
            Ok(p) => {
                tracing::info!(
                    component = %self.launch.component,
                    task = self.launch.task,
                    pid = p.pid,
                    "{}: started subprocess {:?}",
                    self.label,
                    self.launch.command
                );
                self.process = Some(p);
                self.generation += 1;
                Ok(())
            }
            Err(e) => {
                let delay = self.back_off(None);
                Err(format!(
                    "{}: subprocess {:?} failed to start: {e}; retrying in {:.2} s",
                    self.label,
                    self.launch.command,
                    delay.as_secs_f64()
                ))
            }
        }
    }

    fn back_off(&mut self, ran: Option<Duration>) -> Duration {
        if ran.is_some_and(|r| r >= HEALTHY_RUN) {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        let delay = FIRST_BACKOFF
            .saturating_mul(1 << (self.failures - 1).min(10))
            .min(MAX_BACKOFF);
        self.next_start = Instant::now() + delay;
        delay
    }

    /// Reports what could not be reported yet, and (re)starts the subprocess when it is
    /// down and its back-off is over. Returns whether a subprocess runs.
    pub fn ensure_running(&mut self, rep: &mut dyn Reporter) -> bool {
        for e in self.unreported.drain(..) {
            rep.report(&e);
        }
        if self.process.is_none() && Instant::now() >= self.next_start {
            if let Err(e) = self.start() {
                tracing::error!("{e}");
                rep.report(&e);
            }
        }
        self.process.is_some()
    }

    /// Whether the running subprocess has been silent longer than the timeout.
    pub fn hung(&self) -> bool {
        self.process
            .as_ref()
            .is_some_and(|p| p.silent_for() > self.timeout)
    }

    /// Kills the subprocess after a failure and reports `why` with its exit status,
    /// `consequence` (what happened to its tuples) and its last stderr lines.
    pub fn process_failed(&mut self, rep: &mut dyn Reporter, why: &str, consequence: &str) {
        let Some(mut p) = self.process.take() else {
            return;
        };
        let exited = if why.starts_with("exited") {
            p.exit_status(Duration::from_secs(1))
        } else {
            None
        };
        // Also waits for the stderr thread to read the last lines.
        let killed = p.kill();
        let status = exited
            .or(killed)
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        let delay = self.back_off(Some(p.started.elapsed()));
        let msg = format!(
            "{}: subprocess {:?} (pid {}) {why}{status}; {consequence}; restarting it in {:.2} s{}",
            self.label,
            self.launch.command,
            p.pid,
            delay.as_secs_f64(),
            p.stderr_report()
        );
        tracing::error!("{msg}");
        rep.report(&msg);
    }

    /// Handles the messages that mean the same to bolts and spouts. Returns the others.
    pub fn handle_common(&mut self, rep: &mut dyn Reporter, msg: ShellMsg) -> Option<ShellMsg> {
        let pid = self.process.as_ref().map_or(0, |p| p.pid);
        match msg {
            ShellMsg::Log { msg, level } => {
                log_line(&self.launch.component, self.launch.task, pid, level, &msg)
            }
            ShellMsg::Error(text) => {
                rep.report(&format!("{} (pid {pid}): {text}", self.label));
            }
            ShellMsg::Metrics { name, params } => {
                let value = match &params {
                    Json::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f.round() as i64)),
                    Json::Bool(b) => Some(*b as i64),
                    _ => None,
                };
                match value {
                    Some(v) => rep.gauge(&name, v),
                    None => {
                        if self.gauges_refused.insert(name.clone()) {
                            rep.report(&format!(
                                "{}: metric '{name}' sent {params}, not a number; Squall keeps numeric metrics as gauges",
                                self.label
                            ));
                        }
                    }
                }
            }
            ShellMsg::Unknown(command) => {
                if self.unknown_commands.insert(command.clone()) {
                    tracing::warn!(
                        component = %self.launch.component,
                        task = self.launch.task,
                        "{}: ignoring unknown command {command:?}",
                        self.label
                    );
                }
            }
            ShellMsg::Pid(_) => {
                tracing::warn!("{}: ignoring a second handshake answer", self.label);
            }
            other => return Some(other),
        }
        None
    }

    /// Checks an emit against the component's declaration, so a wrong one is reported
    /// instead of reaching the runtime.
    pub fn check_emit(&self, e: &EmitMsg) -> Result<Option<TaskId>, String> {
        let Some(rule) = self.streams.get(&e.stream) else {
            let mut declared: Vec<&str> = self.streams.keys().map(String::as_str).collect();
            declared.sort_unstable();
            return Err(format!(
                "emitted on stream '{}', which it does not declare (declared: {declared:?})",
                e.stream
            ));
        };
        if e.tuple.len() != rule.fields {
            return Err(format!(
                "emitted {} values on stream '{}', which declares {} fields",
                e.tuple.len(),
                e.stream,
                rule.fields
            ));
        }
        match (e.task, rule.direct) {
            (None, false) => Ok(None),
            (Some(t), true) => {
                let task = u32::try_from(t)
                    .map(TaskId)
                    .map_err(|_| format!("emitted directly to task {t}"))?;
                if rule.direct_targets.contains(&task) {
                    Ok(Some(task))
                } else {
                    Err(format!(
                        "emitted directly to task {t} on stream '{}', which that task does not subscribe to with direct grouping",
                        e.stream
                    ))
                }
            }
            (None, true) => Err(format!(
                "emitted on direct stream '{}' without a \"task\"",
                e.stream
            )),
            (Some(t), false) => Err(format!(
                "emitted directly to task {t} on stream '{}', which is not declared direct",
                e.stream
            )),
        }
    }

    /// Queues the task ids answering an emit.
    pub fn send_task_ids(&self, tasks: &[TaskId]) {
        if let Some(p) = &self.process {
            let mut buf = Vec::with_capacity(16);
            protocol::write_task_ids(&mut buf, tasks);
            p.send(buf);
        }
    }
}
