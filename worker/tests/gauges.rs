//! Custom gauges (`set_gauge`) in local mode: what spouts and bolts set reaches the
//! executors' heartbeats (summed over an executor's tasks), the local stats and local
//! mode's Nimbus page; a bad name is reported once and changes nothing else.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use squall_api::{
    values, BasicBolt, BasicOutputCollector, BoxError, Config, OutputFieldsDeclarer, Spout,
    SpoutOutputCollector, TopologyBuilder, Tuple, Value,
};
use squall_cluster::rpc::NimbusClient;
use squall_cluster::state::ExecutorHeartbeat;
use squall_worker::LocalCluster;

/// Tuples each spout task emits.
const PER_TASK: i64 = 50;

/// Emits `PER_TASK` tracked tuples, then nothing; shows what it emitted and what was
/// acked (counted in `ack`, set from `next_tuple`), a negative constant, and tries a
/// name with a space on every call.
#[derive(Clone, Default)]
struct Src {
    emitted: i64,
    acked: i64,
}

impl Spout for Src {
    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        out.set_gauge("bad name", 1);
        out.set_gauge("src.below-zero", -5);
        if self.emitted < PER_TASK {
            self.emitted += 1;
            out.emit_with_id(values![self.emitted], self.emitted);
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
        out.set_gauge("src.emitted", self.emitted);
        out.set_gauge("src.acked", self.acked);
        out.set_gauge("src.pending", out.pending_count() as i64);
    }
    fn ack(&mut self, _msg_id: Value) {
        self.acked += 1;
    }
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["n"]);
    }
}

/// Counts what it sees, as a gauge.
#[derive(Clone, Default)]
struct Seen(i64);

impl BasicBolt for Seen {
    fn execute(
        &mut self,
        _input: &Tuple,
        out: &mut BasicOutputCollector<'_, '_>,
    ) -> Result<(), BoxError> {
        self.0 += 1;
        out.set_gauge("seen", self.0);
        Ok(())
    }
}

fn of<'a>(hbs: &'a [ExecutorHeartbeat], component: &str) -> Vec<&'a ExecutorHeartbeat> {
    hbs.iter().filter(|h| h.component == component).collect()
}

fn gauges(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn gauges_reach_the_heartbeats_and_a_bad_name_is_reported_once() {
    let mut b = TopologyBuilder::new();
    // One executor running two spout tasks: its gauges are the sums of the two.
    b.set_spout("src", Src::default(), 1).set_num_tasks(2);
    b.set_bolt("seen", Seen::default(), 2)
        .shuffle_grouping("src");
    let topology = b.create_topology().unwrap();
    let mut conf = Config::new();
    conf.set_num_ackers(1);
    let cluster = LocalCluster::new();
    cluster.submit_topology("gauges", &conf, &topology).unwrap();

    let total = 2 * PER_TASK;
    let want_src = gauges(&[
        ("src.acked", total),
        ("src.below-zero", -10),
        ("src.emitted", total),
        ("src.pending", 0),
    ]);
    let done = |hbs: &[ExecutorHeartbeat]| {
        let src = of(hbs, "src");
        let seen: i64 = of(hbs, "seen")
            .iter()
            .map(|h| h.gauges.get("seen").copied().unwrap_or(0))
            .sum();
        src.len() == 1 && src[0].gauges == want_src && seen == total
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut hbs = cluster.heartbeats("gauges").unwrap();
    while !done(&hbs) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        hbs = cluster.heartbeats("gauges").unwrap();
    }
    let src = of(&hbs, "src");
    assert_eq!(src.len(), 1);
    assert_eq!(
        (src[0].first.0, src[0].last.0),
        (3, 4),
        "src runs tasks 3 and 4"
    );
    assert_eq!(src[0].gauges, want_src, "the spout executor's gauges");
    let seen = of(&hbs, "seen");
    assert_eq!(seen.len(), 2);
    let per_bolt: Vec<i64> = seen.iter().map(|h| h.gauges["seen"]).collect();
    assert_eq!(per_bolt.iter().sum::<i64>(), total, "{per_bolt:?}");
    assert!(
        per_bolt.iter().all(|&n| n > 0),
        "shuffled to both: {per_bolt:?}"
    );
    // Components that set no gauge have none.
    assert!(of(&hbs, "__acker").iter().all(|h| h.gauges.is_empty()));

    // The local stats sum every executor's.
    let stats = cluster.stats("gauges").unwrap();
    assert_eq!(stats.component("src").gauges, want_src);
    assert_eq!(stats.component("seen").gauges, gauges(&[("seen", total)]));

    // The bad name: reported once (not once per call, not once per task), naming the
    // component, the task and what is wrong; the spout went on.
    let refused: Vec<_> = cluster
        .errors("gauges")
        .unwrap()
        .into_iter()
        .filter(|e| e.error.contains("set_gauge refused"))
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    let e = &refused[0];
    assert_eq!(e.component.as_str(), "src");
    assert!(
        e.error
            .starts_with(&format!("spout 'src' task {}: ", e.task))
            && e.error
                .contains("gauge name \"bad name\" has ' ' at byte 3"),
        "{}",
        e.error
    );
    assert!(cluster.topology_names().contains(&"gauges".to_owned()));

    // Local mode's Nimbus page (what `squall local --ui` shows) carries them too.
    let addr = cluster.serve_nimbus_api(0).unwrap();
    let client = NimbusClient::new(&addr.to_string()).with_timeout(Duration::from_secs(5));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let page = rt.block_on(client.page("gauges")).unwrap();
    let src_page = page
        .executors
        .iter()
        .find(|e| e.component == "src")
        .expect("src on the page");
    assert_eq!(src_page.gauges, want_src);
    let seen_sum: i64 = page
        .executors
        .iter()
        .filter(|e| e.component == "seen")
        .map(|e| e.gauges["seen"])
        .sum();
    assert_eq!(seen_sum, total);
    cluster.kill_topology("gauges").unwrap();
}
