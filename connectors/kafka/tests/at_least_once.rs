//! At least once in local mode: a bolt fails a fifth of the tuples at random; every
//! produced message is still processed (acked) at least once, the offsets the spout
//! commits never pass a message that was not acked, they reach the end of every
//! partition, and the lag gauges fall to zero.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::broker::{unique_topic, KafkaBroker};
use common::{committed, numbered, produce_numbered, wait_until, Recorder, SeenRef};
use squall_api::{Config, TopologyBuilder};
use squall_kafka::{
    create_topics, KafkaSpout, KafkaSpoutConfig, KafkaSpoutRetryExponentialBackoff,
};
use squall_worker::LocalCluster;

const PARTITIONS: i32 = 3;
const MESSAGES: usize = 6000;

#[test]
fn every_message_is_processed_and_commits_never_pass_an_unacked_one() {
    let broker = KafkaBroker::start();
    let b = broker.bootstrap().to_owned();
    let topic = unique_topic("alo");
    let group = format!("{topic}-group");
    create_topics(&b, &[(&topic, PARTITIONS)], Duration::from_secs(10)).unwrap();
    produce_numbered(&b, &topic, "m", 0..MESSAGES / 2, PARTITIONS);

    let spout = KafkaSpout::new(
        KafkaSpoutConfig::builder(&b, [topic.as_str()])
            .group_id(&group)
            .offset_commit_period(Duration::from_millis(100))
            .retry(KafkaSpoutRetryExponentialBackoff::new(
                Duration::ZERO,
                Duration::from_millis(2),
                None,
                Duration::from_millis(100),
            ))
            .build()
            .unwrap(),
    );
    let seen = SeenRef::default();
    let mut builder = TopologyBuilder::new();
    builder.set_spout("kafka", spout, 2);
    builder
        .set_bolt("record", Recorder::new(&seen, 0.2), 2)
        .shuffle_grouping("kafka");
    let topology = builder.create_topology().unwrap();
    let mut conf = Config::new();
    conf.set_max_spout_pending(50);
    let cluster = LocalCluster::new();
    cluster.submit_topology("alo", &conf, &topology).unwrap();

    // Half the messages were there before the topology started, half come while it runs.
    std::thread::sleep(Duration::from_millis(500));
    produce_numbered(&b, &topic, "m", MESSAGES / 2..MESSAGES, PARTITIONS);

    // While it runs: whatever the group has committed was acked, offset by offset.
    let want = numbered("m", 0..MESSAGES);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut mid_run_checks = 0;
    let per_partition = (MESSAGES / PARTITIONS as usize) as i64;
    let mut all_seen = false;
    while Instant::now() < deadline {
        let commits = committed(&b, &group, &topic, PARTITIONS);
        let s = seen.lock().unwrap();
        for (p, c) in commits.iter().enumerate() {
            let Some(c) = *c else { continue };
            for o in 0..c {
                assert!(
                    s.acked.contains(&(p as i32, o)),
                    "partition {p}: offset {c} committed but offset {o} was never acked"
                );
            }
        }
        if commits
            .iter()
            .any(|c| c.is_some_and(|c| c > 0 && c < per_partition))
        {
            mid_run_checks += 1;
        }
        let values: BTreeSet<&String> = s.values.keys().collect();
        all_seen = want.iter().all(|v| values.contains(v));
        if all_seen && commits.iter().all(|c| *c == Some(per_partition)) {
            break;
        }
        drop(s);
        std::thread::sleep(Duration::from_millis(20));
    }
    // The lag gauges fall to zero once everything is committed.
    let lag_zero = wait_until(Duration::from_secs(10), || {
        let gauges = cluster.stats("alo").unwrap().component("kafka").gauges;
        gauges.get("kafka.lag.total") == Some(&0)
            && (0..PARTITIONS).all(|p| gauges.get(&format!("kafka.lag.{topic}.{p}")) == Some(&0))
    });
    let stats = cluster.stats("alo").unwrap();
    let errors = cluster.errors("alo").unwrap();
    cluster.kill_topology("alo").unwrap();

    let s = seen.lock().unwrap();
    assert!(
        all_seen,
        "not every message was processed: {} of {MESSAGES} values seen",
        s.values.len()
    );
    assert!(s.failed > 100, "the bolt failed only {} tuples", s.failed);
    let commits = committed(&b, &group, &topic, PARTITIONS);
    assert_eq!(
        commits,
        vec![Some((MESSAGES / PARTITIONS as usize) as i64); PARTITIONS as usize],
        "the committed offsets must reach the end of each partition"
    );
    assert!(
        mid_run_checks > 0,
        "no commit was checked while the partitions were being read"
    );
    let spout = stats.component("kafka");
    assert!(
        spout.failed > 100,
        "the spout saw {} failures",
        spout.failed
    );
    assert!(spout.acked >= MESSAGES as u64, "{spout:?}");
    // The lag gauges: one per partition, and the total, all zero by now.
    assert!(
        lag_zero,
        "the lag gauges (total and per partition) never all fell to 0: {:?}",
        spout.gauges
    );
    for p in 0..PARTITIONS {
        assert_eq!(
            spout.gauges.get(&format!("kafka.lag.{topic}.{p}")),
            Some(&0),
            "{:?}",
            spout.gauges
        );
    }
    assert!(
        errors.iter().all(|e| !e.error.contains("given up")),
        "no message may be given up with unlimited retries: {errors:?}"
    );
}
