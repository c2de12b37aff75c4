//! Invalid topologies are rejected at build time with an error naming the problem.

use squall_api::config::keys;
use squall_api::{
    values, Bolt, Config, CustomStreamGrouping, GlobalStreamId, Grouping, OutputCollector,
    OutputFieldsDeclarer, Spout, SpoutOutputCollector, TaskId, TopologyBuilder, TopologyError,
    Tuple, Value,
};

#[derive(Clone)]
struct Src;
impl Spout for Src {
    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        out.emit(values!["x", 1]);
    }
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["word", "n"]);
        d.declare_stream("other", ["a"]);
        d.declare_direct_stream("direct", ["a"]);
    }
}

#[derive(Clone)]
struct Sink;
impl Bolt for Sink {
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        out.ack(&input);
    }
}

#[derive(Clone)]
struct TwiceDeclared;
impl Bolt for TwiceDeclared {
    fn execute(&mut self, _input: Tuple, _out: &mut OutputCollector<'_>) {}
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["a"]);
        d.declare(["b"]);
    }
}

#[derive(Clone)]
struct Reserved;
impl Bolt for Reserved {
    fn execute(&mut self, _input: Tuple, _out: &mut OutputCollector<'_>) {}
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare_stream("__mine", ["a"]);
    }
}

#[derive(Clone)]
struct First;
impl CustomStreamGrouping for First {
    fn prepare(&mut self, _stream: &GlobalStreamId, _target_tasks: &[TaskId]) {}
    fn choose_tasks(&mut self, _source: TaskId, _values: &[Value], _out: &mut Vec<TaskId>) {}
}

fn build(f: impl FnOnce(&mut TopologyBuilder)) -> Result<(), TopologyError> {
    let mut b = TopologyBuilder::new();
    b.set_spout("spout", Src, 1);
    f(&mut b);
    b.create_topology().map(|_| ())
}

fn err(f: impl FnOnce(&mut TopologyBuilder)) -> String {
    build(f)
        .expect_err("topology should be rejected")
        .to_string()
}

#[test]
fn a_valid_topology_builds() {
    build(|b| {
        b.set_bolt("a", Sink, 2)
            .fields_grouping("spout", ["word"])
            .shuffle_grouping(("spout", "other"))
            .direct_grouping(("spout", "direct"))
            .set_num_tasks(4);
        b.set_bolt("b", Sink, 1)
            .partial_key_grouping("spout", ["n", "word"])
            .custom_grouping(("spout", "other"), First);
    })
    .unwrap();
}

#[test]
fn unknown_source_component() {
    assert_eq!(
        err(|b| {
            b.set_bolt("count", Sink, 1).shuffle_grouping("splitter");
        }),
        "bolt 'count' subscribes to unknown component 'splitter'"
    );
}

#[test]
fn undeclared_stream() {
    assert_eq!(
        err(|b| {
            b.set_bolt("count", Sink, 1)
                .shuffle_grouping(("spout", "nope"));
        }),
        r#"bolt 'count' subscribes to stream 'nope' of 'spout', which declares only ["default", "direct", "other"]"#
    );
}

#[test]
fn grouping_on_an_undeclared_field() {
    assert_eq!(
        err(|b| {
            b.set_bolt("count", Sink, 1).fields_grouping("spout", ["wrod"]);
        }),
        "bolt 'count' groups stream spout:default by field 'wrod', but that stream's fields are [word, n]"
    );
    assert!(matches!(
        build(|b| {
            b.set_bolt("count", Sink, 1)
                .partial_key_grouping("spout", ["x"]);
        }),
        Err(TopologyError::UnknownGroupingField { .. })
    ));
    assert!(matches!(
        build(|b| {
            b.set_bolt("count", Sink, 1)
                .grouping("spout", Grouping::Fields(squall_api::Fields::default()));
        }),
        Err(TopologyError::EmptyGroupingFields { .. })
    ));
}

#[test]
fn zero_parallelism_and_zero_tasks() {
    assert_eq!(
        err(|b| {
            b.set_bolt("count", Sink, 0).shuffle_grouping("spout");
        }),
        "component 'count' has parallelism 0; it must be at least 1"
    );
    assert_eq!(
        err(|b| {
            b.set_bolt("count", Sink, 1)
                .shuffle_grouping("spout")
                .set_num_tasks(0);
        }),
        "component 'count' has num_tasks 0; it must be at least 1"
    );
}

#[test]
fn duplicate_ids() {
    assert_eq!(
        err(|b| {
            b.set_bolt("spout", Sink, 1);
        }),
        "component id 'spout' is used twice"
    );
    assert_eq!(
        err(|b| {
            b.set_bolt("twice", TwiceDeclared, 1);
        }),
        "component 'twice' declares stream 'default' twice"
    );
    assert_eq!(
        err(|b| {
            b.set_bolt("c", Sink, 1)
                .shuffle_grouping("spout")
                .fields_grouping("spout", ["word"]);
        }),
        "bolt 'c' subscribes to stream spout:default twice"
    );
}

#[test]
fn reserved_names() {
    assert_eq!(
        err(|b| {
            b.set_bolt("__acker", Sink, 1);
        }),
        "component id '__acker' is reserved or empty: ids must be non-empty and not start with '__'"
    );
    assert!(matches!(
        build(|b| {
            b.set_bolt("r", Reserved, 1);
        }),
        Err(TopologyError::ReservedName { what: "stream", .. })
    ));
    assert!(matches!(
        build(|b| {
            b.set_bolt("", Sink, 1);
        }),
        Err(TopologyError::ReservedName {
            what: "component",
            ..
        })
    ));
}

#[test]
fn direct_streams_take_direct_grouping_only() {
    assert_eq!(
        err(|b| {
            b.set_bolt("c", Sink, 1).shuffle_grouping(("spout", "direct"));
        }),
        "bolt 'c' uses shuffle grouping on stream spout:direct, which is direct; direct streams take exactly direct grouping"
    );
    assert!(matches!(
        build(|b| {
            b.set_bolt("c", Sink, 1).direct_grouping("spout");
        }),
        Err(TopologyError::DirectMismatch { .. })
    ));
}

#[test]
fn a_topology_needs_a_spout_and_custom_groupings_need_code() {
    let mut b = TopologyBuilder::new();
    b.set_bolt("lonely", Sink, 1);
    assert_eq!(b.create_topology().unwrap_err(), TopologyError::NoSpout);
    assert!(matches!(
        build(|b| {
            b.set_bolt("c", Sink, 1)
                .grouping("spout", Grouping::Custom("mine".into()));
        }),
        Err(TopologyError::MissingCustomGrouping { .. })
    ));
}

#[test]
fn task_layout_is_deterministic_and_contiguous() {
    let mut b = TopologyBuilder::new();
    b.set_spout("spout", Src, 2);
    b.set_bolt("b", Sink, 2)
        .shuffle_grouping("spout")
        .set_num_tasks(5);
    let t = b.create_topology().unwrap();
    let layout = squall_api::TaskLayout::new(t.spec(), 2);
    // Components in id order: b (5 tasks), spout (2), then 2 ackers.
    assert_eq!(layout.component_tasks("b"), &[1, 2, 3, 4, 5].map(TaskId));
    assert_eq!(layout.component_tasks("spout"), &[TaskId(6), TaskId(7)]);
    assert_eq!(layout.acker_tasks(), &[TaskId(8), TaskId(9)]);
    assert_eq!(
        layout.components()["b"].executors,
        vec![(TaskId(1), TaskId(3)), (TaskId(4), TaskId(5))]
    );
    assert_eq!(layout, squall_api::TaskLayout::new(t.spec(), 2));
}

/// A bolt whose component configuration asks for ticks "often".
#[derive(Clone)]
struct BadTicks;
impl Bolt for BadTicks {
    fn execute(&mut self, _input: Tuple, _out: &mut OutputCollector<'_>) {}
    fn component_configuration(&self) -> Config {
        let mut c = Config::new();
        c.set(keys::TOPOLOGY_TICK_TUPLE_FREQ_SECS, "often");
        c
    }
}

#[test]
fn a_bad_component_config_is_rejected_at_build_time_naming_component_and_key() {
    // From the component's own `component_configuration`.
    assert_eq!(
        build(|b| {
            b.set_bolt("ticked", BadTicks, 1).shuffle_grouping("spout");
        }),
        Err(TopologyError::InvalidComponentConfig {
            component: "ticked".into(),
            key: keys::TOPOLOGY_TICK_TUPLE_FREQ_SECS.into(),
            error: "config key 'topology.tick.tuple.freq.secs' must be a non-negative integer, found \"often\"".into(),
        })
    );
    // From the builder's per-component settings.
    assert_eq!(
        err(|b| {
            b.set_bolt("sink", Sink, 1)
                .shuffle_grouping("spout")
                .add_configuration(keys::TOPOLOGY_DEBUG, "yes");
        }),
        "component 'sink' has an invalid configuration: config key 'topology.debug' must be true or false, found \"yes\""
    );
    // A good component config passes.
    build(|b| {
        b.set_bolt("sink", Sink, 1)
            .shuffle_grouping("spout")
            .add_configuration(keys::TOPOLOGY_TICK_TUPLE_FREQ_SECS, 5)
            .set_max_spout_pending(10);
    })
    .unwrap();
}

#[test]
fn nimbus_side_validation_of_a_spec_checks_component_configs() {
    // A spec as Nimbus receives it (deserialized, never built here).
    let mut b = TopologyBuilder::new();
    b.set_spout("spout", Src, 1);
    b.set_bolt("sink", Sink, 1).shuffle_grouping("spout");
    let mut spec = b.create_topology().unwrap().spec().clone();
    spec.validate().unwrap();
    spec.components
        .get_mut("spout")
        .unwrap()
        .conf
        .set(keys::TOPOLOGY_MAX_SPOUT_PENDING, -3);
    match spec.validate() {
        Err(TopologyError::InvalidComponentConfig { component, key, .. }) => {
            assert_eq!(component, "spout");
            assert_eq!(key, keys::TOPOLOGY_MAX_SPOUT_PENDING);
        }
        other => panic!("expected a component config error, got {other:?}"),
    }
}

#[test]
fn merged_config_errors_blame_the_component_that_sets_the_key() {
    let mut b = TopologyBuilder::new();
    b.set_spout("spout", Src, 1);
    b.set_bolt("sink", Sink, 1)
        .shuffle_grouping("spout")
        .add_configuration(keys::TOPOLOGY_MESSAGE_TIMEOUT_SECS, 0);
    // The message timeout must be positive; the component set it to 0.
    match b.create_topology() {
        Err(TopologyError::InvalidComponentConfig { component, key, .. }) => {
            assert_eq!(component, "sink");
            assert_eq!(key, keys::TOPOLOGY_MESSAGE_TIMEOUT_SECS);
        }
        other => panic!("expected a component config error, got {other:?}"),
    }

    let mut b = TopologyBuilder::new();
    b.set_spout("spout", Src, 1);
    b.set_bolt("sink", Sink, 1).shuffle_grouping("spout");
    let t = b.create_topology().unwrap();
    let mut conf = Config::new();
    conf.set(keys::TOPOLOGY_PRODUCER_BATCH_SIZE, "big");
    assert_eq!(
        t.spec().validate_with_conf(&conf).unwrap_err().to_string(),
        "invalid topology configuration: config key 'topology.producer.batch.size' must be a non-negative integer, found \"big\""
    );
    conf.set(keys::TOPOLOGY_PRODUCER_BATCH_SIZE, 64);
    t.spec().validate_with_conf(&conf).unwrap();
}

/// Not `Clone`: only the factory form can add it.
struct Numbered {
    made: u32,
}
impl Spout for Numbered {
    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        out.emit(values![self.made as i64]);
    }
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["made"]);
    }
    fn component_configuration(&self) -> Config {
        let mut c = Config::new();
        c.set_max_spout_pending(7);
        c
    }
}

struct Counting {
    seen: u64,
}
impl Bolt for Counting {
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        self.seen += 1;
        out.ack(&input);
    }
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["seen"]);
    }
}

#[test]
fn factory_forms_make_one_instance_per_call_and_read_outputs_from_one_instance() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    let made = Arc::new(AtomicU32::new(0));
    let counter = made.clone();
    let mut b = TopologyBuilder::new();
    b.set_spout_with(
        "numbers",
        move || Numbered {
            made: counter.fetch_add(1, Ordering::SeqCst),
        },
        3,
    );
    b.set_bolt_with("count", || Counting { seen: 0 }, 2)
        .fields_grouping("numbers", ["made"]);
    // One instance was made to read the outputs and the component config.
    assert_eq!(made.load(Ordering::SeqCst), 1);
    let t = b.create_topology().unwrap();
    let spout = &t.spec().components["numbers"];
    assert_eq!(spout.outputs["default"].fields.names(), ["made"]);
    assert_eq!(spout.conf.max_spout_pending().unwrap(), Some(7));
    assert_eq!(spout.parallelism, 3);
    assert_eq!(
        t.spec().components["count"].outputs["default"]
            .fields
            .names(),
        ["seen"]
    );
    // Every task instance is a fresh call of the factory.
    for _ in 0..3 {
        assert!(t.new_spout("numbers").is_some());
    }
    assert_eq!(made.load(Ordering::SeqCst), 4);
    assert!(t.new_bolt("count").is_some());
    assert!(t.new_bolt("numbers").is_none());
}
