//! Helpers of the multilang tests: the Python to run, a replaying Rust spout, a
//! collecting Rust bolt and a local cluster that is shut down even when a test fails.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use squall_api::{
    values, BasicBolt, BasicOutputCollector, BoxError, Config, OutputFieldsDeclarer, Spout,
    SpoutOutputCollector, Topology, TopologyContext, Tuple, Value,
};
use squall_worker::LocalCluster;

/// The Python with pystorm/streamparse: `$SQUALL_PYTHON` (set by scripts/test.sh), else
/// what scripts/ensure-multilang-python.sh makes (idempotent).
pub fn python() -> String {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        if let Ok(p) = std::env::var("SQUALL_PYTHON") {
            if !p.is_empty() {
                return p;
            }
        }
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/ensure-multilang-python.sh"
        );
        let out = std::process::Command::new(script)
            .output()
            .expect("running scripts/ensure-multilang-python.sh");
        assert!(
            out.status.success(),
            "ensure-multilang-python.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    })
    .clone()
}

/// The absolute path of a fixture.
pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Emits each of `items` once with its index as message id (at most `rate` per
/// second), re-emitting failed ones; counts replays.
#[derive(Clone)]
pub struct Items {
    pub items: Arc<Vec<String>>,
    pub rate: Option<u64>,
    pub replays: Arc<AtomicU64>,
    next: usize,
    replay: VecDeque<usize>,
    started: Option<Instant>,
}

impl Items {
    pub fn new(items: Vec<String>, rate: Option<u64>) -> Self {
        Items {
            items: Arc::new(items),
            rate,
            replays: Arc::default(),
            next: 0,
            replay: VecDeque::new(),
            started: None,
        }
    }
}

impl Spout for Items {
    fn open(&mut self, _: &Config, _: &TopologyContext) -> Result<(), BoxError> {
        self.started = Some(Instant::now());
        Ok(())
    }

    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        if let Some(i) = self.replay.pop_front() {
            self.replays.fetch_add(1, Ordering::Relaxed);
            out.emit_with_id(values![self.items[i].clone()], i as i64);
            return;
        }
        if self.next >= self.items.len() {
            return;
        }
        if let (Some(rate), Some(start)) = (self.rate, self.started) {
            if self.next as f64 >= start.elapsed().as_secs_f64() * rate as f64 {
                return;
            }
        }
        out.emit_with_id(values![self.items[self.next].clone()], self.next as i64);
        self.next += 1;
    }

    fn fail(&mut self, msg_id: Value) {
        self.replay.push_back(msg_id.as_i64().unwrap() as usize);
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["word"]);
    }
}

/// Records the first field of every tuple it gets.
#[derive(Clone, Default)]
pub struct Collect {
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl Collect {
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl BasicBolt for Collect {
    fn execute(
        &mut self,
        input: &Tuple,
        _: &mut BasicOutputCollector<'_, '_>,
    ) -> Result<(), BoxError> {
        self.seen
            .lock()
            .unwrap()
            .push(input.get_string(0)?.to_owned());
        Ok(())
    }
}

/// Waits until `f` holds, at most `secs` seconds.
pub fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A topology running in a local cluster; killed (subprocesses and all) on drop.
pub struct Running {
    pub cluster: LocalCluster,
    pub name: &'static str,
}

impl Running {
    pub fn start(name: &'static str, conf: &Config, topology: &Topology) -> Running {
        let cluster = LocalCluster::new();
        cluster
            .submit_topology(name, conf, topology)
            .expect("topology starts");
        Running { cluster, name }
    }

    /// The errors reported so far, as "component task: text".
    pub fn errors(&self) -> Vec<String> {
        self.cluster
            .errors(self.name)
            .unwrap()
            .into_iter()
            .map(|e| format!("{} {}: {}", e.component, e.task, e.error))
            .collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self
            .cluster
            .kill_topology_with_opts(self.name, Duration::from_millis(200));
    }
}

/// A base configuration for the tests: one acker, short message timeout.
pub fn conf() -> Config {
    let mut c = Config::new();
    c.set_num_ackers(1);
    c.set_message_timeout_secs(30);
    c.set_max_spout_pending(1000);
    c
}
