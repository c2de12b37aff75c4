//! The broker restarts while a topology reads from it: the spout carries on, every
//! message is processed and the commits reach the end.

mod common;

use std::time::Duration;

use common::broker::{unique_topic, KafkaBroker};
use common::{committed, numbered, produce_numbered, wait_until, Recorder, SeenRef};
use squall_api::{Config, TopologyBuilder};
use squall_kafka::{create_topics, KafkaSpout, KafkaSpoutConfig};
use squall_worker::LocalCluster;

#[test]
fn the_spout_survives_a_broker_restart() {
    let mut broker = KafkaBroker::start();
    if broker.is_external() {
        eprintln!("broker_restart: skipped (SQUALL_KAFKA_BOOTSTRAP is set: cannot restart an external broker)");
        return;
    }
    let b = broker.bootstrap().to_owned();
    let topic = unique_topic("restart");
    let group = format!("{topic}-g");
    create_topics(&b, &[(&topic, 2)], Duration::from_secs(10)).unwrap();
    produce_numbered(&b, &topic, "m", 0..100, 2);
    let spout = KafkaSpout::new(
        KafkaSpoutConfig::builder(&b, [topic.as_str()])
            .group_id(&group)
            .offset_commit_period(Duration::from_millis(200))
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
    cluster
        .submit_topology(
            "restart",
            &Config::new(),
            &builder.create_topology().unwrap(),
        )
        .unwrap();
    let all_seen = |n: usize| {
        let want = numbered("m", 0..n);
        let s = seen.lock().unwrap();
        want.iter().all(|v| s.values.contains_key(v))
    };
    assert!(
        wait_until(Duration::from_secs(20), || all_seen(100)),
        "first half not processed"
    );
    assert!(
        wait_until(Duration::from_secs(10), || committed(&b, &group, &topic, 2)
            == vec![Some(50), Some(50)]),
        "first half not committed"
    );

    broker.restart();
    assert_eq!(
        broker.log().matches("press Ctrl-C").count(),
        2,
        "the broker did not restart:\n{}",
        broker.log()
    );
    produce_numbered(&b, &topic, "m", 100..200, 2);
    let done = wait_until(Duration::from_secs(40), || all_seen(200));
    let commits_done = wait_until(Duration::from_secs(20), || {
        committed(&b, &group, &topic, 2) == vec![Some(100), Some(100)]
    });
    cluster.kill_topology("restart").unwrap();
    assert!(
        done,
        "messages produced after the restart were not all processed"
    );
    assert!(
        commits_done,
        "commits after the restart: {:?}",
        committed(&b, &group, &topic, 2)
    );
}
