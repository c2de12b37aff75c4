//! Invalid topologies are rejected at build time with an error naming the problem.

use squall_api::{
    values, Bolt, CustomStreamGrouping, GlobalStreamId, Grouping, OutputCollector,
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
