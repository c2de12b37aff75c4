//! Kafka at least once on a real cluster, with a worker SIGKILLed mid-run. The
//! `kafka-forward` topology (KafkaSpout -> KafkaBolt) copies an input topic into an
//! output topic on two workers (real ZooKeeper, Nimbus, two supervisors, a Kafka-protocol
//! broker) while messages are produced; a worker running spout tasks is killed. At the
//! end every input message is in the output topic (at least once), and whenever the
//! group's committed offsets were read, every input below them had already been copied:
//! a commit never passes a message that was not acked.
//!
//! Figures (messages, duplicates, recovery) are printed on stderr
//! (`cargo test -p squall-cli --test kafka_cluster -- --nocapture`).

mod common;
#[path = "../../connectors/kafka/tests/common/mod.rs"]
mod kafka;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::chaos::ChaosCluster;
use common::{block, package_binary, signal, stdout, wait_until};
use kafka::broker::{unique_topic, KafkaBroker};

const NAME: &str = "kforward";
const PARTITIONS: i32 = 3;
const MESSAGES: usize = 20_000;
/// Messages produced per second (so the run lasts through the kill).
const RATE: usize = 1_000;

/// The slot ports running `component`'s executors.
fn ports_of(c: &ChaosCluster, component: &str) -> BTreeSet<u16> {
    block(c.client().page(NAME))
        .map(|page| {
            page.executors
                .into_iter()
                .filter(|e| e.component == component)
                .map(|e| e.port)
                .collect()
        })
        .unwrap_or_default()
}

/// Value of every input message by `(partition, offset)`.
type Inputs = HashMap<(i32, i64), String>;

fn output_values(b: &str, topic: &str) -> BTreeSet<String> {
    kafka::read_all(b, topic, PARTITIONS)
        .into_iter()
        .map(|(_, _, _, v)| v)
        .collect()
}

#[test]
fn kafka_forward_copies_every_message_through_a_worker_kill() {
    let c = ChaosCluster::start(1, 2);
    let broker = KafkaBroker::start();
    let b = broker.bootstrap().to_owned();
    let input = unique_topic("kc-in");
    let output = unique_topic("kc-out");
    let group = format!("{input}-group");
    squall_kafka::create_topics(
        &b,
        &[(&input, PARTITIONS), (&output, PARTITIONS)],
        Duration::from_secs(10),
    )
    .unwrap();

    // Produce in the background, paced, so the kill lands mid-run.
    let done_producing = Arc::new(AtomicBool::new(false));
    let producer = {
        let (b, input, done) = (b.clone(), input.clone(), done_producing.clone());
        std::thread::spawn(move || {
            let chunk = RATE / 10;
            for start in (0..MESSAGES).step_by(chunk) {
                let t = Instant::now();
                kafka::produce_numbered(
                    &b,
                    &input,
                    "m",
                    start..(start + chunk).min(MESSAGES),
                    PARTITIONS,
                );
                std::thread::sleep(Duration::from_millis(100).saturating_sub(t.elapsed()));
            }
            done.store(true, Ordering::Release);
        })
    };

    let bin = package_binary("squall-kafka", "kafka-forward");
    let out = c.squall(&[
        "jar",
        bin.to_str().unwrap(),
        NAME,
        "--brokers",
        &b,
        "--input",
        &input,
        "--output",
        &output,
        "--group",
        &group,
        "--partitions",
        &PARTITIONS.to_string(),
        "--parallelism",
        "2",
        "--workers",
        "2",
        "--commit-ms",
        "200",
        "-c",
        "topology.message.timeout.secs=10",
    ]);
    assert!(
        out.status.success(),
        "submit failed: {}\n{}",
        stdout(&out),
        c.logs()
    );

    // Copies flow.
    let t0 = Instant::now();
    assert!(
        wait_until(Duration::from_secs(90), || {
            kafka::high_watermarks(&b, &output, PARTITIONS)
                .iter()
                .sum::<i64>()
                > 1000
        }),
        "nothing was copied:\n{}",
        c.logs()
    );
    eprintln!(
        "kafka: copies flowing {:.1} s after the submission",
        t0.elapsed().as_secs_f64()
    );

    // Commits seen while running, each with the output read right after it.
    let mut snapshots: Vec<(Vec<Option<i64>>, BTreeSet<String>)> = Vec::new();
    snapshots.push((
        kafka::committed(&b, &group, &input, PARTITIONS),
        output_values(&b, &output),
    ));

    // Kill a worker running spout tasks, mid-run.
    let spout_ports = ports_of(&c, "kafka");
    let port = *spout_ports.iter().next().expect("the spout runs somewhere");
    let (_, pid) = c
        .worker_at(port)
        .expect("a live worker on the spout's port");
    assert!(
        !done_producing.load(Ordering::Acquire),
        "the run was over before the kill: raise MESSAGES"
    );
    let killed_at = Instant::now();
    signal(pid, "KILL");
    eprintln!("kafka: killed worker {pid} (port {port}) running spout tasks");
    assert!(
        wait_until(Duration::from_secs(90), || {
            let ports = ports_of(&c, "kafka");
            !ports.is_empty()
                && ports
                    .iter()
                    .all(|&p| c.worker_at(p).is_some_and(|(_, q)| q != pid))
        }),
        "the killed worker was not replaced:\n{}",
        c.logs()
    );
    eprintln!(
        "kafka: worker replaced after {:.1} s",
        killed_at.elapsed().as_secs_f64()
    );
    snapshots.push((
        kafka::committed(&b, &group, &input, PARTITIONS),
        output_values(&b, &output),
    ));
    producer.join().unwrap();

    // Converge: every input copied, the commits at the end of every partition.
    let high = kafka::high_watermarks(&b, &input, PARTITIONS);
    assert_eq!(high.iter().sum::<i64>(), MESSAGES as i64);
    let want = kafka::numbered("m", 0..MESSAGES);
    let mut missing = want.len();
    let converged = wait_until(Duration::from_secs(120), || {
        let got = output_values(&b, &output);
        missing = want.iter().filter(|v| !got.contains(*v)).count();
        missing == 0
    });
    assert!(
        converged,
        "{missing} input messages never reached the output:\n{}",
        c.logs()
    );
    let all_committed = wait_until(Duration::from_secs(60), || {
        kafka::committed(&b, &group, &input, PARTITIONS)
            == high.iter().map(|&h| Some(h)).collect::<Vec<_>>()
    });
    let last_commits = kafka::committed(&b, &group, &input, PARTITIONS);
    assert!(
        all_committed,
        "commits {last_commits:?} never reached the ends {high:?}"
    );
    snapshots.push((last_commits, output_values(&b, &output)));

    // Every snapshot: what was committed had been copied.
    let inputs: Inputs = kafka::read_all(&b, &input, PARTITIONS)
        .into_iter()
        .map(|(p, o, _, v)| ((p, o), v))
        .collect();
    for (i, (commits, copied)) in snapshots.iter().enumerate() {
        for (p, c) in commits.iter().enumerate() {
            let Some(c) = *c else { continue };
            for o in 0..c {
                let v = &inputs[&(p as i32, o)];
                assert!(
                    copied.contains(v),
                    "snapshot {i}: partition {p} committed up to {c}, but offset {o} ({v}) was not copied"
                );
            }
        }
    }
    let copies: i64 = kafka::high_watermarks(&b, &output, PARTITIONS).iter().sum();
    eprintln!(
        "kafka: {MESSAGES} messages, {copies} copies ({} duplicates from replays), commits {:?}",
        copies - MESSAGES as i64,
        snapshots.iter().map(|(c, _)| c.clone()).collect::<Vec<_>>()
    );
    assert!(copies >= MESSAGES as i64);
}
