//! Worker mode: the topology binary started by a supervisor runs its share of the
//! executors, exchanges tuples with the other workers over TCP and heartbeats to its
//! supervisor (a local file) and to Nimbus (RPC).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use squall_api::{ComponentId, ComponentKind, TaskId, TaskLayout, Topology};
use squall_cluster::config::ClusterConfig;
use squall_cluster::rpc::NimbusClient;
use squall_cluster::state::{
    now_secs, ErrorInfo, ExecutorHeartbeat, HeartbeatResponse, LocalHeartbeat, TopologyStatus,
    WorkerHeartbeat, WorkerLaunch, WorkerSlot,
};

use crate::runtime::{RuntimePlan, TopologyRuntime};
use crate::transport::{connect_remote, LocalRouter, TransportServer};
use crate::WorkerError;

/// Environment variable naming the launch file a supervisor wrote for this worker.
pub const WORKER_SPEC_ENV: &str = "SQUALL_WORKER_SPEC";

fn fail(msg: impl Into<String>) -> WorkerError {
    WorkerError::NotLaunched(msg.into())
}

/// Reads the launch file named by [`WORKER_SPEC_ENV`].
pub fn read_launch() -> Result<WorkerLaunch, WorkerError> {
    let path = std::env::var(WORKER_SPEC_ENV).map_err(|_| {
        fail(format!(
            "{WORKER_SPEC_ENV} is not set; workers are started by a supervisor"
        ))
    })?;
    let bytes = std::fs::read(&path).map_err(|e| fail(format!("cannot read {path}: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| fail(format!("invalid launch file {path}: {e}")))
}

fn resolve(addr: &str) -> Result<SocketAddr, WorkerError> {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| fail(format!("cannot resolve worker address {addr}")))
}

/// Runs this process as the worker described by `launch` until Nimbus no longer
/// assigns it; then returns.
pub fn run(topology: &Topology, launch: WorkerLaunch) -> Result<(), WorkerError> {
    let a = &launch.assignment;
    let conf = a.conf.clone();
    let layout = Arc::new(TaskLayout::new(topology.spec(), conf.num_ackers()?));
    let me = WorkerSlot {
        node: launch.supervisor_id.clone(),
        port: launch.port,
    };

    // The assignment must describe the topology this binary builds.
    for e in &a.executors {
        let tasks = layout.component_tasks(&e.component);
        if !tasks.contains(&e.first) || !tasks.contains(&e.last) {
            return Err(fail(format!(
                "the assignment of topology '{}' puts tasks {}-{} in component '{}', which this binary does not build that way; was it submitted with other arguments?",
                a.topology_name, e.first, e.last, e.component
            )));
        }
    }
    let kind = |c: &str| {
        layout
            .components()
            .get(c)
            .map_or(ComponentKind::Bolt, |t| t.kind)
    };
    let local = a
        .executors
        .iter()
        .filter(|e| e.slot == me)
        .map(|e| {
            (
                ComponentId::new(e.component.as_str()),
                kind(&e.component),
                e.first,
                e.last,
            )
        })
        .collect::<Vec<_>>();

    // Listen first so peers can connect while the executors start.
    let listener = TcpListener::bind(("0.0.0.0", launch.port))
        .map_err(|e| fail(format!("cannot listen on port {}: {e}", launch.port)))?;

    let capacity = (conf.receive_buffer_size()? / conf.producer_batch_size()?).max(4) as usize;
    let mut remote_tasks: BTreeMap<WorkerSlot, Vec<TaskId>> = BTreeMap::new();
    for e in a.executors.iter().filter(|e| e.slot != me) {
        remote_tasks
            .entry(e.slot.clone())
            .or_default()
            .extend((e.first.0..=e.last.0).map(TaskId));
    }
    let mut remotes = Vec::new();
    let mut connections = Vec::new();
    for (slot, tasks) in remote_tasks {
        let addr = resolve(&a.address(&slot))?;
        let (tx, conn) = connect_remote(addr, a.topology_id.clone(), me.to_string(), capacity)
            .map_err(|e| fail(format!("cannot start the connection to {addr}: {e}")))?;
        remotes.push((tasks, tx));
        connections.push(conn);
    }
    let plan = RuntimePlan {
        local,
        remote: remotes,
        worker_port: Some(launch.port),
        host: Some(launch.host.clone()),
        ..RuntimePlan::default()
    };
    let mut runtime =
        TopologyRuntime::start_plan(&a.topology_id, topology, &conf, layout, plan, false)?;
    let (queues, dest) = runtime.local_queues();
    let mut server = TransportServer::start(
        listener,
        a.topology_id.clone(),
        LocalRouter::new(&queues, &dest),
    )
    .map_err(|e| fail(format!("cannot serve port {}: {e}", launch.port)))?;
    eprintln!(
        "worker {} of topology {} running {} executors on port {}",
        me,
        a.topology_id,
        runtime.executor_stats().len(),
        launch.port
    );

    let result = heartbeat_loop(&runtime, &launch, &conf);
    runtime.shutdown(Duration::from_secs(5));
    server.shutdown();
    for mut c in connections {
        c.shutdown();
    }
    result
}

fn heartbeat_loop(
    runtime: &TopologyRuntime,
    launch: &WorkerLaunch,
    conf: &squall_api::Config,
) -> Result<(), WorkerError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start the heartbeat runtime: {e}")))?;
    let every = conf
        .worker_heartbeat_frequency()?
        .max(Duration::from_millis(100));
    let started = Instant::now();
    let standalone = launch.nimbus.is_empty();
    let mut active = false;
    if standalone {
        runtime.activate();
        active = true;
    }
    let mut errors_sent = 0;
    let mut unknown_since: Option<Instant> = None;
    let pid = std::process::id();
    loop {
        let executors: Vec<ExecutorHeartbeat> = runtime
            .executor_stats()
            .into_iter()
            .map(|(component, first, last, s)| {
                let lat = s.complete_latency_ms.unwrap_or_default();
                ExecutorHeartbeat {
                    component: component.to_string(),
                    first,
                    last,
                    emitted: s.emitted,
                    transferred: s.transferred,
                    acked: s.acked,
                    failed: s.failed,
                    executed: s.executed,
                    execute_latency_ms: s.execute_latency_ms,
                    complete_latency_ms: lat.mean,
                    complete_latency_p50_ms: lat.p50,
                    complete_latency_p99_ms: lat.p99,
                    complete_latency_max_ms: lat.max,
                }
            })
            .collect();
        // To the supervisor: a file it reads.
        let local = LocalHeartbeat {
            topology_id: launch.topology_id.clone(),
            assignment_version: launch.assignment.version,
            epoch: launch.assignment.epoch,
            time_secs: now_secs(),
            pid,
            executors: executors.clone(),
        };
        let tmp = launch.heartbeat_file.with_extension("tmp");
        if std::fs::write(
            &tmp,
            serde_json::to_vec(&local).expect("heartbeat serializes"),
        )
        .and_then(|_| std::fs::rename(&tmp, &launch.heartbeat_file))
        .is_err()
        {
            tracing::warn!(
                "cannot write heartbeat file {}",
                launch.heartbeat_file.display()
            );
        }

        // To Nimbus: executor counters and new errors; it answers with the status.
        let all_errors = runtime.errors();
        let new_errors: Vec<ErrorInfo> = all_errors[errors_sent.min(all_errors.len())..]
            .iter()
            .map(|e| ErrorInfo {
                component: e.component.to_string(),
                task: e.task.0,
                host: launch.host.clone(),
                port: launch.port,
                time_secs: e.time_secs,
                error: e.error.clone(),
            })
            .collect();
        let hb = WorkerHeartbeat {
            topology_id: launch.topology_id.clone(),
            supervisor_id: launch.supervisor_id.clone(),
            host: launch.host.clone(),
            port: launch.port,
            assignment_version: launch.assignment.version,
            epoch: launch.assignment.epoch,
            uptime_secs: started.elapsed().as_secs(),
            time_secs: now_secs(),
            executors,
            errors: new_errors,
        };
        let mut answer = None;
        for addr in &launch.nimbus {
            match rt.block_on(NimbusClient::new(addr).heartbeat(&hb)) {
                Ok(r) => {
                    answer = Some(r);
                    break;
                }
                Err(e) => tracing::warn!("heartbeat to Nimbus at {addr} failed: {e}"),
            }
        }
        if let Some(r) = answer {
            errors_sent = all_errors.len();
            let status = match r {
                HeartbeatResponse::Assigned { status, .. } => Some(status),
                HeartbeatResponse::NotAssigned => None,
                HeartbeatResponse::Unknown => {
                    std::thread::sleep(every);
                    continue;
                }
            };
            match status {
                Some(TopologyStatus::Active) => {
                    unknown_since = None;
                    if !active {
                        runtime.activate();
                        active = true;
                    }
                }
                Some(_) => {
                    unknown_since = None;
                    if active {
                        runtime.deactivate();
                        active = false;
                    }
                }
                None => {
                    // Not (or no longer) assigned here: stop after a short grace, in case
                    // Nimbus is just writing a new assignment.
                    let since = *unknown_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= Duration::from_secs(3) {
                        eprintln!("Nimbus no longer assigns this worker; stopping");
                        return Ok(());
                    }
                }
            }
        }
        std::thread::sleep(every);
    }
}
