//! What each processing guarantee does with tuples that fail, and what becomes of a
//! message that fails more often than `max_retries` allows.

mod common;

use std::time::Duration;

use common::broker::{unique_topic, KafkaBroker};
use common::{committed, produce_numbered, wait_until, Recorder, SeenRef};
use squall_api::{Config, TopologyBuilder};
use squall_kafka::{
    create_topics, KafkaSpout, KafkaSpoutConfig, KafkaSpoutRetryExponentialBackoff,
    ProcessingGuarantee,
};
use squall_worker::LocalCluster;

const N: usize = 30;

struct Outcome {
    emitted: u64,
    failed_by_bolt: u64,
    commits: Vec<Option<i64>>,
    gauges: std::collections::BTreeMap<String, i64>,
    errors: Vec<String>,
}

/// Runs N messages through a bolt that fails every tuple; waits until `done`.
fn run(
    b: &str,
    guarantee: ProcessingGuarantee,
    max_retries: Option<u32>,
    done: impl Fn(&Outcome) -> bool,
) -> Outcome {
    let topic = unique_topic(&format!("g-{guarantee:?}").to_lowercase());
    let group = format!("{topic}-g");
    create_topics(b, &[(&topic, 1)], Duration::from_secs(10)).unwrap();
    produce_numbered(b, &topic, "m", 0..N, 1);
    let spout = KafkaSpout::new(
        KafkaSpoutConfig::builder(b, [topic.as_str()])
            .group_id(&group)
            .processing_guarantee(guarantee)
            .offset_commit_period(Duration::from_millis(100))
            .retry(KafkaSpoutRetryExponentialBackoff::new(
                Duration::ZERO,
                Duration::from_millis(1),
                max_retries,
                Duration::from_millis(10),
            ))
            .build()
            .unwrap(),
    );
    let seen = SeenRef::default();
    let mut builder = TopologyBuilder::new();
    builder.set_spout("kafka", spout, 1);
    builder
        .set_bolt("record", Recorder::new(&seen, 1.0), 1)
        .shuffle_grouping("kafka");
    let cluster = LocalCluster::new();
    let name = "guarantee";
    let mut conf = Config::new();
    conf.set(
        squall_api::config::keys::TOPOLOGY_MAX_ERROR_REPORT_PER_INTERVAL,
        1000,
    );
    cluster
        .submit_topology(name, &conf, &builder.create_topology().unwrap())
        .unwrap();
    let outcome = || {
        let stats = cluster.stats(name).unwrap().component("kafka");
        Outcome {
            emitted: stats.emitted,
            failed_by_bolt: seen.lock().unwrap().failed,
            commits: committed(b, &group, &topic, 1),
            gauges: stats.gauges,
            errors: cluster
                .errors(name)
                .unwrap()
                .into_iter()
                .map(|e| e.error)
                .collect(),
        }
    };
    wait_until(Duration::from_secs(20), || done(&outcome()));
    // Nothing more happens later.
    std::thread::sleep(Duration::from_millis(300));
    let o = outcome();
    cluster.kill_topology(name).unwrap();
    o
}

#[test]
fn failed_tuples_are_retried_only_at_least_once_and_given_up_only_past_max_retries() {
    let broker = KafkaBroker::start();
    let b = broker.bootstrap().to_owned();
    let end = vec![Some(N as i64)];
    std::thread::scope(|s| {
        // At most once: each record emitted once, failures not retried, all committed.
        let amo = s.spawn(|| {
            run(&b, ProcessingGuarantee::AtMostOnce, None, |o| {
                o.failed_by_bolt == N as u64 && o.commits == end
            })
        });
        // No guarantee: the same, committed periodically.
        let ng = s.spawn(|| {
            run(&b, ProcessingGuarantee::NoGuarantee, None, |o| {
                o.failed_by_bolt == N as u64 && o.commits == end
            })
        });
        // At least once with 2 retries: each record emitted 3 times, then given up on,
        // reported and counted, and its offset committed.
        let alo = s.spawn(|| {
            run(&b, ProcessingGuarantee::AtLeastOnce, Some(2), |o| {
                o.gauges.get("kafka.retries.exhausted") == Some(&(N as i64)) && o.commits == end
            })
        });
        for (what, o) in [
            ("AT_MOST_ONCE", amo.join().unwrap()),
            ("NO_GUARANTEE", ng.join().unwrap()),
        ] {
            assert_eq!(o.emitted, N as u64, "{what}: emitted");
            assert_eq!(o.failed_by_bolt, N as u64, "{what}: failed");
            assert_eq!(o.commits, end, "{what}: committed");
        }
        let o = alo.join().unwrap();
        assert_eq!(
            o.emitted,
            3 * N as u64,
            "AT_LEAST_ONCE: each record emitted 1 + 2 retries times"
        );
        assert_eq!(o.gauges.get("kafka.retries.exhausted"), Some(&(N as i64)));
        assert_eq!(o.commits, end, "given-up messages count as done");
        let given_up: Vec<&String> = o.errors.iter().filter(|e| e.contains("given up")).collect();
        // Each is reported (the runtime keeps a component's last 10 errors).
        assert!(!given_up.is_empty(), "no error reported: {:?}", o.errors);
        assert_eq!(given_up.len(), o.errors.len(), "{:?}", o.errors);
        assert!(
            given_up[0].contains("offset") && given_up[0].contains("failed 3 times"),
            "{}",
            given_up[0]
        );
    });
}
