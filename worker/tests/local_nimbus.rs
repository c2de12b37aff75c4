//! Local mode's stand-in for Nimbus: the UI reads a local topology through the same
//! RPC client and types as on a cluster.

use std::time::{Duration, Instant};

use squall_api::{
    values, BasicBolt, BasicOutputCollector, BoxError, Config, OutputFieldsDeclarer, Spout,
    SpoutOutputCollector, TopologyBuilder, Tuple,
};
use squall_cluster::metrics::Window;
use squall_cluster::rpc::{NimbusClient, RpcError};
use squall_cluster::state::TopologyStatus;
use squall_worker::LocalCluster;

#[derive(Clone)]
struct Numbers(i64);

impl Spout for Numbers {
    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        self.0 += 1;
        out.emit_with_id(values![self.0], self.0);
        std::thread::sleep(Duration::from_micros(200));
    }
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["n"]);
    }
}

#[derive(Clone)]
struct Pass;

impl BasicBolt for Pass {
    fn execute(
        &mut self,
        input: &Tuple,
        out: &mut BasicOutputCollector<'_, '_>,
    ) -> Result<(), BoxError> {
        out.emit(values![input.get_long(0)?]);
        Ok(())
    }
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["n"]);
    }
}

#[test]
fn the_ui_reads_a_local_topology_through_nimbus_rpc() {
    let mut b = TopologyBuilder::new();
    b.set_spout("numbers", Numbers(0), 1);
    b.set_bolt("pass", Pass, 2).shuffle_grouping("numbers");
    let topology = b.create_topology().unwrap();
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("local-ui", &Config::new(), &topology)
        .unwrap();
    let addr = cluster.serve_nimbus_api(0).unwrap();
    let client = NimbusClient::new(&addr.to_string()).with_timeout(Duration::from_secs(5));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let list = rt.block_on(client.list()).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].name.as_str(), list[0].status),
        ("local-ui", TopologyStatus::Active)
    );
    let summary = rt.block_on(client.cluster()).unwrap();
    assert_eq!(summary.topologies, 1);

    // Counts arrive and grow; every executor (ackers too) is listed with its windows.
    let executed = |page: &squall_cluster::rpc::TopologyPage| -> u64 {
        page.executors
            .iter()
            .filter(|e| e.component == "pass")
            .map(|e| e.windows.last().unwrap().counters.input_total().executed)
            .sum()
    };
    let first = rt.block_on(client.page("local-ui")).unwrap();
    assert_eq!(
        first
            .executors
            .iter()
            .filter(|e| e.component == "pass")
            .count(),
        2
    );
    assert!(first.executors.iter().any(|e| e.component == "__acker"));
    assert!(first
        .spec
        .components
        .contains_key(&squall_api::ComponentId::new("pass")));
    let windows: Vec<Window> = first.executors[0]
        .windows
        .iter()
        .map(|w| w.window)
        .collect();
    assert_eq!(windows, Window::ALL);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = rt.block_on(client.page(&first.summary.id)).unwrap();
        if executed(&page) > executed(&first) && executed(&page) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "counts never grew");
        std::thread::sleep(Duration::from_millis(300));
    }

    // Actions change what the next read shows; unknown names are 404.
    rt.block_on(client.deactivate("local-ui")).unwrap();
    assert_eq!(
        rt.block_on(client.list()).unwrap()[0].status,
        TopologyStatus::Inactive
    );
    rt.block_on(client.activate("local-ui")).unwrap();
    assert_eq!(
        rt.block_on(client.list()).unwrap()[0].status,
        TopologyStatus::Active
    );
    match rt.block_on(client.page("nope")) {
        Err(RpcError::Api {
            status: 404,
            message,
        }) => assert!(message.contains("nope"), "{message}"),
        other => panic!("expected 404, got {other:?}"),
    }
    let refused = rt.block_on(client.rebalance("local-ui", &Default::default()));
    assert!(
        matches!(refused, Err(RpcError::Api { status: 400, .. })),
        "{refused:?}"
    );
    rt.block_on(client.kill("local-ui", None)).unwrap();
    assert!(rt.block_on(client.list()).unwrap().is_empty());
}
