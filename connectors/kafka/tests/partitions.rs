//! A partition added while the topology runs is picked up by the periodic refresh, and
//! its messages are processed.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::broker::{unique_topic, KafkaBroker};
use common::{produce, wait_until, Recorder, SeenRef};
use squall_api::{Config, TopologyBuilder};
use squall_kafka::{create_partitions, create_topics, KafkaSpout, KafkaSpoutConfig};
use squall_worker::LocalCluster;

#[test]
fn partitions_added_while_running_are_read() {
    let broker = KafkaBroker::start();
    let b = broker.bootstrap().to_owned();
    let topic = unique_topic("grow");
    create_topics(&b, &[(&topic, 1)], Duration::from_secs(10)).unwrap();
    let batch =
        |p: i32, n: usize| (0..n).map(move |i| (Some(p), format!("k{i}"), format!("p{p}-{i}")));
    produce(&b, &topic, batch(0, 50));

    let spout = KafkaSpout::new(
        KafkaSpoutConfig::builder(&b, [topic.as_str()])
            .group_id(format!("{topic}-g"))
            .partition_refresh_period(Duration::from_millis(300))
            .build()
            .unwrap(),
    );
    let seen = SeenRef::default();
    let mut builder = TopologyBuilder::new();
    builder.set_spout("kafka", spout, 2);
    builder
        .set_bolt("record", Recorder::new(&seen, 0.0), 1)
        .shuffle_grouping("kafka");
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("grow", &Config::new(), &builder.create_topology().unwrap())
        .unwrap();
    let count = |p: i32| {
        seen.lock()
            .unwrap()
            .acked
            .iter()
            .filter(|(q, _)| *q == p)
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(20), || count(0) == 50),
        "partition 0 was not read"
    );

    create_partitions(&b, &topic, 3, Duration::from_secs(10)).unwrap();
    produce(
        &b,
        &topic,
        batch(1, 40).chain(batch(2, 30)).chain(batch(0, 10)),
    );
    let done = wait_until(Duration::from_secs(30), || {
        count(0) == 60 && count(1) == 40 && count(2) == 30
    });
    // Each partition's lag gauge is set by its owner once the spout's metadata thread has
    // fetched that partition's high watermark, which can trail the records themselves.
    let gauge_names: Vec<String> = (0..3).map(|p| format!("kafka.lag.{topic}.{p}")).collect();
    let mut stats = cluster.stats("grow").unwrap();
    wait_until(Duration::from_secs(10), || {
        stats = cluster.stats("grow").unwrap();
        let gauges = &stats.component("kafka").gauges;
        gauge_names.iter().all(|g| gauges.contains_key(g))
    });
    cluster.kill_topology("grow").unwrap();
    assert!(
        done,
        "not every message of the new partitions was processed: {} / {} / {} of 60 / 40 / 30",
        count(0),
        count(1),
        count(2)
    );
    let s = seen.lock().unwrap();
    let values: BTreeSet<&String> = s.values.keys().collect();
    assert!(values.contains(&"p2-29".to_owned()));
    // Both spout tasks read: three partitions dealt over two tasks, each partition's lag
    // gauge set by its owner.
    let gauges = &stats.component("kafka").gauges;
    for g in &gauge_names {
        assert!(gauges.contains_key(g), "no {g}: {gauges:?}");
    }
}
