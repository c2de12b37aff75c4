//! Stateful bolts with checkpointing in local mode: a finite input through random
//! failures (bolts failing tuples, Redis frozen mid-run) ends in committed state equal
//! to the input's effect, exactly; the Redis provider's prepare/commit/rollback against
//! a real redis-server; bad state configurations refused before anything runs.

#[path = "../../trident/tests/common/redis.rs"]
mod redis;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use redis::RedisServer;
use squall_api::state::{keys, namespace, KeyValueState, StateProvider};
use squall_api::{Config, TaskId, TaskLayout, Topology};
use squall_examples::stateful::{
    committed_counts, state_conf, stateful_word_count, StatefulWordCountOptions,
};
use squall_examples::trident::expected_counts;
use squall_worker::LocalCluster;

fn count_tasks(t: &Topology) -> Vec<TaskId> {
    TaskLayout::new(t.spec(), 1)
        .component_tasks("count")
        .to_vec()
}

fn total(m: &BTreeMap<String, u64>) -> u64 {
    m.values().sum()
}

/// Runs `topology` as `name` until its committed counts equal those of `sentences`
/// sentences (calling `chaos` once per poll with the time since the start; it says
/// whether the state can be read now), then checks that they stay so for a few more
/// checkpoints.
fn run_to_exact_counts(
    name: &str,
    conf: &Config,
    topology: &Topology,
    sentences: u64,
    limit: Duration,
    mut chaos: impl FnMut(Duration) -> bool,
) {
    let want = expected_counts(sentences);
    let tasks = count_tasks(topology);
    let cluster = LocalCluster::new();
    cluster.submit_topology(name, conf, topology).unwrap();
    let start = Instant::now();
    let mut got = BTreeMap::new();
    while start.elapsed() < limit {
        let readable = chaos(start.elapsed());
        std::thread::sleep(Duration::from_millis(100));
        if !readable {
            continue;
        }
        got = committed_counts(conf, name, tasks.iter().copied()).unwrap();
        for (w, n) in &got {
            let at_most = want.get(w).copied().unwrap_or(0);
            assert!(
                *n <= at_most,
                "'{w}' committed {n} times, more than the {at_most} of the input: applied twice"
            );
        }
        if got == want {
            break;
        }
    }
    assert_eq!(
        total(&got),
        total(&want),
        "after {limit:?} the committed counts are not those of {sentences} sentences"
    );
    assert_eq!(got, want);
    // A few more checkpoints change nothing: every tuple was applied exactly once.
    std::thread::sleep(Duration::from_millis(1500));
    let later = committed_counts(conf, name, tasks.iter().copied()).unwrap();
    assert_eq!(later, want, "the counts moved after they were complete");
    let stats = cluster.kill_topology(name).unwrap();
    assert!(
        stats.component("$checkpointspout").acked > 0,
        "checkpoints were committed"
    );
}

fn options(sentences: u64, split_fail: f64, count_fail: f64) -> StatefulWordCountOptions {
    StatefulWordCountOptions {
        sentences: Some(sentences),
        rate: Some(1500),
        parallelism: 2,
        split_fail_rate: split_fail,
        count_fail_rate: count_fail,
        stateless: false,
    }
}

#[test]
fn memory_state_is_exact_without_failures() {
    let topology = stateful_word_count(&options(3000, 0.0, 0.0)).unwrap();
    let mut conf = state_conf(None);
    conf.set(keys::TOPOLOGY_STATE_CHECKPOINT_INTERVAL, 200);
    run_to_exact_counts(
        "swc-mem",
        &conf,
        &topology,
        3000,
        Duration::from_secs(30),
        |_| true,
    );
}

#[test]
fn memory_state_is_exact_through_random_failures() {
    // About one failed sentence and one failed word every few checkpoints: each one
    // fails its checkpoint, rolls every task back and replays what was not committed.
    let topology = stateful_word_count(&options(6000, 0.0004, 0.00004)).unwrap();
    let mut conf = state_conf(None);
    conf.set(keys::TOPOLOGY_STATE_CHECKPOINT_INTERVAL, 200);
    conf.set_message_timeout_secs(5);
    run_to_exact_counts(
        "swc-mem-failures",
        &conf,
        &topology,
        6000,
        Duration::from_secs(90),
        |_| true,
    );
}

#[test]
fn redis_state_is_exact_through_failures_and_a_frozen_redis() {
    let server = RedisServer::start();
    // 500 sentences/s per spout task: the input lasts about 6 s, past both freezes
    // (at 1 500/s a quick run was complete before the second one).
    let topology = stateful_word_count(&StatefulWordCountOptions {
        rate: Some(500),
        ..options(6000, 0.0003, 0.00003)
    })
    .unwrap();
    let mut conf = state_conf(Some(&server.url()));
    conf.set(
        keys::TOPOLOGY_STATE_PROVIDER_CONFIG,
        serde_json::json!({ "url": server.url(), "timeout": 300 }).to_string(),
    );
    conf.set(keys::TOPOLOGY_STATE_CHECKPOINT_INTERVAL, 200);
    conf.set_message_timeout_secs(5);
    // Freeze Redis twice for a second: prepares, commits and rollbacks time out and
    // fail until it is back.
    let mut frozen = false;
    let mut freezes = 0;
    run_to_exact_counts(
        "swc-redis",
        &conf,
        &topology,
        6000,
        Duration::from_secs(120),
        |t| {
            let in_window = [(1.0, 2.0), (3.0, 4.0)]
                .iter()
                .any(|(a, b)| t.as_secs_f64() >= *a && t.as_secs_f64() < *b);
            if in_window && !frozen {
                server.pause();
                frozen = true;
                freezes += 1;
            } else if !in_window && frozen {
                server.resume();
                frozen = false;
            }
            !frozen
        },
    );
    assert_eq!(freezes, 2);
    // The counts are plain JSON in Redis, one hash per task.
    let mut c = server.connection();
    let the: Option<String> = ::redis::cmd("HGET")
        .arg("swc-redis:count-2")
        .arg("\"the\"")
        .query(&mut c)
        .unwrap();
    let the3: Option<String> = ::redis::cmd("HGET")
        .arg("swc-redis:count-3")
        .arg("\"the\"")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        the.or(the3).as_deref(),
        Some("4800"),
        "'the' is in 2 of the 5 sentences"
    );
}

fn redis_conf(server: &RedisServer) -> Config {
    let mut conf = Config::new();
    conf.set(
        keys::TOPOLOGY_STATE_PROVIDER,
        "org.apache.storm.redis.state.RedisKeyValueStateProvider",
    );
    let port = server.port();
    conf.set(
        keys::TOPOLOGY_STATE_PROVIDER_CONFIG,
        format!(r#"{{"jedisPoolConfig":{{"host":"127.0.0.1","port":{port},"database":0}}}}"#),
    );
    conf
}

#[test]
fn redis_provider_prepares_commits_and_rolls_back() {
    let server = RedisServer::start();
    let conf = redis_conf(&server);
    assert!(matches!(
        StateProvider::from_conf(&conf),
        Ok(StateProvider::Redis(_))
    ));
    let ns = namespace("unit", "count", TaskId(3));
    let mut s: KeyValueState<String, u64> = KeyValueState::open(&conf, &ns).unwrap();
    assert!(s.is_empty());
    s.put("a".into(), 1);
    s.put("b".into(), 2);
    s.prepare_commit(1).unwrap();
    // Prepared, not committed: a task that restarts now sees nothing.
    let fresh: KeyValueState<String, u64> = KeyValueState::open(&conf, &ns).unwrap();
    assert!(fresh.is_empty());
    assert_eq!(s.prepared_txid().unwrap(), Some(1));
    s.commit(1).unwrap();
    s.commit(1).unwrap(); // a retried commit changes nothing
    assert_eq!(s.committed_txid().unwrap(), Some(1));
    let fresh: KeyValueState<String, u64> = KeyValueState::open(&conf, &ns).unwrap();
    assert_eq!(fresh.get(&"b".into()), Some(&2));

    // Writes after a prepare belong to the next transaction; a rollback drops both.
    s.put("a".into(), 10);
    s.delete(&"b".into());
    s.prepare_commit(2).unwrap();
    s.put("c".into(), 3);
    s.rollback().unwrap();
    assert_eq!(s.get(&"a".into()), Some(&1));
    assert_eq!(s.get(&"b".into()), Some(&2));
    assert_eq!(s.get(&"c".into()), None);
    assert_eq!(s.prepared_txid().unwrap(), None);
    s.commit(2).unwrap(); // rolled back: nothing to commit
    assert_eq!(s.committed_txid().unwrap(), Some(1));

    // A prepared transaction survives the task: a new instance rolls it forward.
    s.delete(&"b".into());
    s.put("a".into(), 5);
    s.prepare_commit(3).unwrap();
    drop(s);
    let mut again: KeyValueState<String, u64> = KeyValueState::open(&conf, &ns).unwrap();
    assert_eq!(again.get(&"a".into()), Some(&1), "not committed yet");
    again.commit(3).unwrap();
    let fresh: KeyValueState<String, u64> = KeyValueState::open(&conf, &ns).unwrap();
    assert_eq!(fresh.get(&"a".into()), Some(&5));
    assert_eq!(
        fresh.get(&"b".into()),
        None,
        "the prepared delete was applied"
    );

    // The layout in Redis: JSON fields and values in the namespace's hash.
    let mut c = server.connection();
    let raw: BTreeMap<String, String> = ::redis::cmd("HGETALL").arg(&ns).query(&mut c).unwrap();
    assert_eq!(raw, BTreeMap::from([("\"a\"".to_owned(), "5".to_owned())]));

    // An unreachable Redis is an error naming it.
    let mut dead = Config::new();
    dead.set(keys::TOPOLOGY_STATE_PROVIDER, "redis");
    dead.set(
        keys::TOPOLOGY_STATE_PROVIDER_CONFIG,
        r#"{"url":"redis://127.0.0.1:1","timeout":300}"#,
    );
    let e = KeyValueState::<String, u64>::open(&dead, "x").unwrap_err();
    assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
}

#[test]
fn bad_state_configurations_are_refused_before_anything_runs() {
    let topology = stateful_word_count(&options(10, 0.0, 0.0)).unwrap();
    let cluster = LocalCluster::new();
    let mut conf = Config::new();
    conf.set(
        keys::TOPOLOGY_STATE_PROVIDER,
        "org.apache.storm.hbase.state.HBaseKeyValueStateProvider",
    );
    let e = cluster
        .submit_topology("swc-bad", &conf, &topology)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "unknown state provider 'org.apache.storm.hbase.state.HBaseKeyValueStateProvider'"
        ),
        "{e}"
    );
    assert!(e.contains("'memory'") && e.contains("'redis'"), "{e}");
    assert!(cluster.topology_names().is_empty());

    let mut conf = Config::new();
    conf.set(keys::TOPOLOGY_STATE_PROVIDER, "redis");
    conf.set(
        keys::TOPOLOGY_STATE_PROVIDER_CONFIG,
        "{\"jedisPoolConfig\": [1]}",
    );
    let e = topology
        .spec()
        .validate_with_conf(&conf)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("topology.state.provider.config") && e.contains("jedisPoolConfig"),
        "{e}"
    );

    let mut conf = Config::new();
    conf.set(keys::TOPOLOGY_STATE_CHECKPOINT_INTERVAL, "soon");
    let e = topology
        .spec()
        .validate_with_conf(&conf)
        .unwrap_err()
        .to_string();
    assert!(e.contains("topology.state.checkpoint.interval.ms"), "{e}");

    let mut conf = Config::new();
    conf.set_num_ackers(0);
    let e = topology
        .spec()
        .validate_with_conf(&conf)
        .unwrap_err()
        .to_string();
    assert!(e.contains("topology.acker.executors"), "{e}");

    // A topology without stateful bolts does not care about the provider.
    let plain = squall_examples::word_count_topology(&Default::default()).unwrap();
    let mut conf = Config::new();
    conf.set(keys::TOPOLOGY_STATE_PROVIDER, "nonsense");
    plain.spec().validate_with_conf(&conf).unwrap();
}

#[test]
fn the_builder_wires_checkpointing_into_a_stateful_topology() {
    let topology = stateful_word_count(&options(10, 0.0, 0.0)).unwrap();
    let spec = topology.spec();
    let cp = &spec.components["$checkpointspout"];
    assert_eq!((cp.parallelism, cp.num_tasks), (1, 1));
    let subscribed = |c: &str, src: &str| {
        spec.components[c]
            .inputs
            .iter()
            .any(|s| s.source.component == src && s.source.stream == "$checkpoint")
    };
    assert!(subscribed("sentences", "$checkpointspout"));
    assert!(subscribed("split", "sentences"));
    assert!(subscribed("count", "split"));
    for c in ["sentences", "split", "count"] {
        assert!(
            spec.components[c].outputs.contains_key("$checkpoint"),
            "{c}"
        );
    }
    assert!(squall_api::state::is_stateful(spec));
}
