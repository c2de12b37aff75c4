//! Each first poll offset strategy, against a partition holding offsets 0..10 (and a
//! commit of offset 5 by an earlier deployment, or none), with offsets 10..15 produced
//! once the spout has its partition: which offsets the spout emits.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::broker::{unique_topic, KafkaBroker};
use common::{commit, produce_numbered, wait_until, Recorder, SeenRef};
use squall_api::{Config, TopologyBuilder};
use squall_kafka::{create_topics, FirstPollOffsetStrategy, KafkaSpout, KafkaSpoutConfig};
use squall_worker::LocalCluster;
use FirstPollOffsetStrategy::*;

/// Runs one case; returns the offsets the spout emitted.
fn run(b: &str, strategy: FirstPollOffsetStrategy, earlier_commit: bool) -> BTreeSet<i64> {
    let topic = unique_topic(&format!("fp-{strategy:?}-{earlier_commit}").to_lowercase());
    let group = format!("{topic}-g");
    create_topics(b, &[(&topic, 1)], Duration::from_secs(10)).unwrap();
    produce_numbered(b, &topic, "a", 0..10, 1);
    if earlier_commit {
        commit(
            b,
            &group,
            &topic,
            0,
            5,
            r#"{"topologyId":"an-earlier-deployment-1-1"}"#,
        );
    }
    let spout = KafkaSpout::new(
        KafkaSpoutConfig::builder(b, [topic.as_str()])
            .group_id(&group)
            .first_poll_offset_strategy(strategy)
            .build()
            .unwrap(),
    );
    let seen = SeenRef::default();
    let mut builder = TopologyBuilder::new();
    builder.set_spout("kafka", spout, 1);
    builder
        .set_bolt("record", Recorder::new(&seen, 0.0), 1)
        .shuffle_grouping("kafka");
    let cluster = LocalCluster::new();
    let name = "first-poll";
    cluster
        .submit_topology(name, &Config::new(), &builder.create_topology().unwrap())
        .unwrap();
    // The lag gauge of the partition shows once the spout reads it.
    let gauge = format!("kafka.lag.{topic}.0");
    assert!(
        wait_until(Duration::from_secs(20), || cluster
            .stats(name)
            .unwrap()
            .component("kafka")
            .gauges
            .contains_key(&gauge)),
        "{strategy:?}: the spout never got its partition"
    );
    produce_numbered(b, &topic, "b", 0..5, 1);
    let has_last = || seen.lock().unwrap().acked.contains(&(0, 14));
    assert!(
        wait_until(Duration::from_secs(20), has_last),
        "{strategy:?}: offset 14 never came"
    );
    // Anything else would have come by now.
    std::thread::sleep(Duration::from_millis(300));
    cluster.kill_topology(name).unwrap();
    let s = seen.lock().unwrap();
    s.acked.iter().map(|&(_, o)| o).collect()
}

#[test]
fn each_first_poll_strategy_starts_where_storms_does() {
    let broker = KafkaBroker::start();
    let b = broker.bootstrap().to_owned();
    let cases = [
        // An earlier deployment's commit is ignored by EARLIEST and LATEST...
        (Earliest, true, 0..15),
        (Latest, true, 10..15),
        // ... and resumed from by the UNCOMMITTED_ strategies.
        (UncommittedEarliest, true, 5..15),
        (UncommittedLatest, true, 5..15),
        // Without a commit they start at the beginning or at the end.
        (UncommittedEarliest, false, 0..15),
        (UncommittedLatest, false, 10..15),
    ];
    std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|(strategy, earlier, want)| {
                let b = &b;
                s.spawn(move || {
                    let got = run(b, *strategy, *earlier);
                    let want: BTreeSet<i64> = want.clone().collect();
                    assert_eq!(got, want, "{strategy:?} with an earlier commit: {earlier}");
                })
            })
            .collect();
        for h in handles {
            h.join().expect("a case failed");
        }
    });
}
