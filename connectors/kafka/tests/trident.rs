//! The opaque Trident Kafka spout with an opaque state counts every message exactly
//! once, although batches fail and replay at random.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::broker::{unique_topic, KafkaBroker};
use common::produce;
use squall_api::{values, BoxError, Config};
use squall_kafka::{create_topics, KafkaSpoutConfig, KafkaTridentSpout, SimpleRecordTranslator};
use squall_trident::{
    Count, MemoryMapState, Opaque, TridentCollector, TridentTopology, TridentTuple,
};
use squall_worker::LocalCluster;

const PARTITIONS: i32 = 3;
const MESSAGES: usize = 900;
const WORDS: usize = 20;

/// Passes the word on, failing the batch with probability `p`.
#[derive(Clone)]
struct Flaky {
    p: f64,
    rng: fastrand::Rng,
}

impl squall_trident::Function for Flaky {
    fn execute(
        &mut self,
        t: &TridentTuple<'_>,
        out: &mut TridentCollector,
    ) -> Result<(), BoxError> {
        if self.rng.f64() < self.p {
            return Err("injected batch failure".into());
        }
        out.emit(values![t.get_string(0)?]);
        Ok(())
    }
}

#[test]
fn opaque_kafka_spout_counts_exactly_once() {
    let broker = KafkaBroker::start();
    let b = broker.bootstrap().to_owned();
    let topic = unique_topic("trident");
    create_topics(&b, &[(&topic, PARTITIONS)], Duration::from_secs(10)).unwrap();
    let msgs = |r: std::ops::Range<usize>| {
        r.map(|i| {
            (
                Some((i % PARTITIONS as usize) as i32),
                String::new(),
                format!("w{}", i % WORDS),
            )
        })
    };
    produce(&b, &topic, msgs(0..MESSAGES / 2));

    let config = KafkaSpoutConfig::builder(&b, [topic.as_str()])
        .group_id(format!("{topic}-g"))
        .record_translator(SimpleRecordTranslator::new(["word"], |r| {
            r.value_str().map(|v| values![v.as_ref()])
        }))
        .build()
        .unwrap();
    let state = MemoryMapState::opaque();
    let mut topology = TridentTopology::new();
    topology
        .new_stream(
            "kwords",
            Opaque(KafkaTridentSpout::new(config).max_batch_size(40)),
        )
        .parallelism_hint(2)
        .each(
            ["word"],
            Flaky {
                p: 0.003,
                rng: fastrand::Rng::with_seed(5),
            },
            ["w"],
        )
        .group_by(["w"])
        .persistent_aggregate(state.clone(), Count, ["count"])
        .parallelism_hint(2);
    let topology = topology.build().unwrap();
    let mut conf = Config::new();
    conf.set("topology.trident.batch.emit.interval.millis", 10);
    conf.set_max_spout_pending(3);
    conf.set_message_timeout_secs(10);
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("ktrident", &conf, &topology)
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    produce(&b, &topic, msgs(MESSAGES / 2..MESSAGES));

    let want: BTreeMap<String, i64> = (0..WORDS)
        .map(|w| (format!("w{w}"), (MESSAGES / WORDS) as i64))
        .collect();
    let counts = || -> BTreeMap<String, i64> {
        state
            .snapshot()
            .iter()
            .map(|(k, v)| (k[0].as_str().unwrap().to_owned(), v.as_i64().unwrap()))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got = counts();
        if got == want || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Nothing more arrives later (no batch is applied twice).
    std::thread::sleep(Duration::from_millis(500));
    let later = counts();
    let stats = cluster.kill_topology("ktrident").unwrap();
    assert_eq!(got, want, "counts differ from the input's");
    assert_eq!(later, want, "counts changed after converging");
    let gauges = &stats.component("$mastercoord-bg0").gauges;
    assert!(
        gauges.get("trident.replays").is_some_and(|&r| r >= 1),
        "no batch replayed: {gauges:?}"
    );
}
