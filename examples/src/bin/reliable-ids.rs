//! At-least-once, end to end: a finite, durable spout and a sink that records what it saw.
//!
//! The spout emits the ids `0..count`, each with a message id; task `i` of `n` owns the
//! ids `i, i+n, i+2n, ...`. When an id's tuple tree is acked, the spout appends it to
//! `DIR/acked-<i>.log` (its "committed offsets", as a Kafka spout commits): a restarted or
//! moved task reads that log in `open` and never emits an acked id again, and re-emits
//! every id that was pending when its worker died. A failed or timed-out id is emitted
//! again. The tuples pass a relay bolt (anchored) and reach a sink, fields-grouped on the
//! id, that appends every id it sees to `DIR/seen-<task>.log` before acking it.
//!
//! So after any failure, when every spout task has acked all its ids, the union of the
//! `acked-*` logs is `0..count` (nothing lost) and the `seen-*` logs hold every id at
//! least once; their extra lines are the duplicates replays caused. The failure tests
//! (`cli/tests/failures.rs`) check exactly that, and `reliable-ids --check DIR --count N`
//! prints it.
//!
//! ```text
//! reliable-ids --dir /tmp/ids --count 20000                     # local mode
//! squall jar ./reliable-ids --dir /tmp/ids --count 20000 ids    # on a cluster, as "ids"
//! reliable-ids --check /tmp/ids --count 20000                   # lost / duplicates
//! ```

use std::collections::{BTreeSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use squall_api::{
    values, BasicBolt, BasicOutputCollector, BoxError, Config, OutputFieldsDeclarer, Spout,
    SpoutOutputCollector, TopologyBuilder, TopologyContext, Tuple, Value,
};
use squall_examples::Pacer;
use squall_worker::{LocalCluster, StormSubmitter};

#[derive(Parser, Clone)]
#[command(
    name = "reliable-ids",
    about = "A finite, durable spout and a recording sink: proves at-least-once"
)]
struct Args {
    /// Submit to the cluster under this name (when started by `squall jar`); without it
    /// the topology runs in local mode until every id is acked.
    name: Option<String>,
    /// Directory of the acked and seen logs (shared by every worker of this machine).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// How many ids to emit.
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Ids per second per spout task (0: as fast as possible).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Spout tasks.
    #[arg(long, default_value_t = 2)]
    spouts: u32,
    /// Relay and sink executors each.
    #[arg(long, default_value_t = 2)]
    bolts: u32,
    /// Worker processes (cluster mode).
    #[arg(long, default_value_t = 3)]
    workers: u32,
    /// `topology.message.timeout.secs`.
    #[arg(long, default_value_t = 10)]
    timeout: u32,
    /// `topology.max.spout.pending` (0: no cap).
    #[arg(long, default_value_t = 2000)]
    max_pending: u32,
    /// Microseconds the relay bolt spends on every tuple (a deliberately slow bolt).
    #[arg(long, default_value_t = 0)]
    slow_us: u64,
    /// The relay bolt fails every Nth id the first time it sees it, reporting an error
    /// (0: never). The spout replays it, so every id is still acked in the end: a way to
    /// see explicit fails, reported errors and their log lines in the UI.
    #[arg(long, default_value_t = 0)]
    reject_every: u64,
    /// Do not run: check the logs in this directory and print lost ids and duplicates.
    #[arg(long)]
    check: Option<PathBuf>,
}

/// Emits the ids of its task, remembering the acked ones in a log.
struct DurableSpout {
    dir: PathBuf,
    count: u64,
    rate: u64,
    tasks: u64,
    index: u64,
    next: u64,
    acked: BTreeSet<u64>,
    replay: VecDeque<u64>,
    log: Option<File>,
    pacer: Option<Pacer>,
}

impl DurableSpout {
    fn new(dir: &Path, count: u64, rate: u64) -> Self {
        DurableSpout {
            dir: dir.to_owned(),
            count,
            rate,
            tasks: 1,
            index: 0,
            next: 0,
            acked: BTreeSet::new(),
            replay: VecDeque::new(),
            log: None,
            pacer: None,
        }
    }
}

fn read_ids(path: &Path) -> Vec<u64> {
    let Ok(f) = File::open(path) else {
        return Vec::new();
    };
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Spout for DurableSpout {
    fn open(&mut self, _conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        self.tasks = ctx.component_tasks(ctx.this_component_id().as_str()).len() as u64;
        self.index = ctx.this_task_index() as u64;
        let path = self.dir.join(format!("acked-{}.log", self.index));
        self.acked = read_ids(&path).into_iter().collect();
        self.next = self.index;
        let log = append(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        self.log = Some(log);
        if self.rate > 0 {
            self.pacer = Some(Pacer::new(self.rate));
        }
        eprintln!(
            "reliable-ids: spout task {} of {} resumes with {} ids acked",
            self.index,
            self.tasks,
            self.acked.len()
        );
        Ok(())
    }

    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        if let Some(p) = &mut self.pacer {
            if !p.ready() {
                return;
            }
        }
        let id = match self.replay.pop_front() {
            Some(id) => id,
            None => {
                while self.next < self.count && self.acked.contains(&self.next) {
                    self.next += self.tasks;
                }
                if self.next >= self.count {
                    return;
                }
                let id = self.next;
                self.next += self.tasks;
                id
            }
        };
        out.emit_with_id(values![id as i64], Value::from(id as i64));
    }

    fn ack(&mut self, msg_id: Value) {
        let Some(id) = msg_id.as_i64().map(|i| i as u64) else {
            return;
        };
        if self.acked.insert(id) {
            if let Some(log) = &mut self.log {
                let _ = log.write_all(format!("{id}\n").as_bytes());
            }
        }
    }

    fn fail(&mut self, msg_id: Value) {
        if let Some(id) = msg_id.as_i64() {
            if !self.acked.contains(&(id as u64)) {
                self.replay.push_back(id as u64);
            }
        }
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["id"]);
    }
}

/// Passes the id on, anchored; optionally slowly.
#[derive(Clone)]
struct Relay {
    slow: Duration,
    reject_every: u64,
    rejected: std::collections::HashSet<i64>,
}

impl BasicBolt for Relay {
    fn execute(
        &mut self,
        input: &Tuple,
        out: &mut BasicOutputCollector<'_, '_>,
    ) -> Result<(), BoxError> {
        if !self.slow.is_zero() {
            let until = Instant::now() + self.slow;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        let id = input.get_long(0)?;
        if self.reject_every > 0
            && id.unsigned_abs() % self.reject_every == 0
            && self.rejected.insert(id)
        {
            return Err(format!("relay rejected id {id} on purpose (--reject-every)").into());
        }
        out.emit(values![id]);
        Ok(())
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["id"]);
    }
}

/// Appends every id it sees to its log, then acks it.
struct RecordingSink {
    dir: PathBuf,
    log: Option<File>,
}

impl BasicBolt for RecordingSink {
    fn prepare(&mut self, _conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        let path = self.dir.join(format!("seen-{}.log", ctx.this_task_id()));
        let log = append(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        self.log = Some(log);
        Ok(())
    }

    fn execute(
        &mut self,
        input: &Tuple,
        _out: &mut BasicOutputCollector<'_, '_>,
    ) -> Result<(), BoxError> {
        let id = input.get_long(0)?;
        let log = self.log.as_mut().ok_or("the sink's log is not open")?;
        log.write_all(format!("{id}\n").as_bytes())?;
        Ok(())
    }
}

/// What the logs in a directory say about ids `0..count`.
struct Outcome {
    acked: usize,
    seen_distinct: usize,
    seen_total: usize,
    lost: Vec<u64>,
}

fn check(dir: &Path, count: u64) -> anyhow::Result<Outcome> {
    let mut acked = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut seen_total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("acked-") {
            acked.extend(read_ids(&path));
        } else if name.starts_with("seen-") {
            let ids = read_ids(&path);
            seen_total += ids.len();
            seen.extend(ids);
        }
    }
    let lost = (0..count)
        .filter(|id| !acked.contains(id) || !seen.contains(id))
        .collect();
    Ok(Outcome {
        acked: acked.range(0..count).count(),
        seen_distinct: seen.range(0..count).count(),
        seen_total,
        lost,
    })
}

fn main() -> anyhow::Result<()> {
    squall_examples::init_logging();
    let args = Args::parse();
    if let Some(dir) = &args.check {
        let o = check(dir, args.count)?;
        println!(
            "ids {}  acked {}  seen {}  lost {}  duplicates {}",
            args.count,
            o.acked,
            o.seen_distinct,
            o.lost.len(),
            o.seen_total - o.seen_distinct
        );
        if !o.lost.is_empty() {
            let some: Vec<String> = o.lost.iter().take(20).map(u64::to_string).collect();
            anyhow::bail!("{} ids lost, e.g. {}", o.lost.len(), some.join(" "));
        }
        return Ok(());
    }
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("reliable-ids-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let mut builder = TopologyBuilder::new();
    // Factory forms: each task gets a fresh instance (with its own open file), no Clone.
    let (spout_dir, count, rate) = (dir.clone(), args.count, args.rate);
    builder.set_spout_with(
        "ids",
        move || DurableSpout::new(&spout_dir, count, rate),
        args.spouts,
    );
    builder
        .set_bolt(
            "relay",
            Relay {
                slow: Duration::from_micros(args.slow_us),
                reject_every: args.reject_every,
                rejected: Default::default(),
            },
            args.bolts,
        )
        .shuffle_grouping("ids");
    builder
        .set_bolt_with(
            "sink",
            {
                let dir = dir.clone();
                move || RecordingSink {
                    dir: dir.clone(),
                    log: None,
                }
            },
            args.bolts,
        )
        .fields_grouping("relay", ["id"]);
    let topology = builder.create_topology()?;
    let mut conf = Config::new();
    conf.set_message_timeout_secs(args.timeout);
    if args.max_pending > 0 {
        conf.set_max_spout_pending(args.max_pending);
    }

    if let Some(name) = &args.name {
        conf.set_num_workers(args.workers);
        StormSubmitter::submit_topology(name, &conf, &topology)?;
        return Ok(());
    }

    let cluster = LocalCluster::new();
    cluster.submit_topology("reliable-ids", &conf, &topology)?;
    println!(
        "reliable-ids: emitting {} ids into {}",
        args.count,
        dir.display()
    );
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let o = check(&dir, args.count)?;
        if o.lost.is_empty() {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "gave up after 10 minutes with {} ids not yet acked",
            o.lost.len()
        );
    }
    cluster.kill_topology("reliable-ids")?;
    let o = check(&dir, args.count)?;
    println!(
        "reliable-ids: all {} ids acked and seen in {:.1} s, {} duplicates",
        args.count,
        started.elapsed().as_secs_f64(),
        o.seen_total - o.seen_distinct
    );
    Ok(())
}
