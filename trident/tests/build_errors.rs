//! A malformed Trident topology is refused when it is built, with an error naming the
//! operation and what is wrong.

use squall_api::{values, BoxError, Config};
use squall_trident::{
    Count, FixedBatchSpout, MemoryMapState, Sum, TridentCollector, TridentTopology, TridentTuple,
};
use squall_worker::LocalCluster;

fn spout() -> FixedBatchSpout {
    FixedBatchSpout::new(["sentence"], 2, vec![values!["a b"]])
}

fn noop(_t: &TridentTuple<'_>, _out: &mut TridentCollector) -> Result<(), BoxError> {
    Ok(())
}

fn error_of(t: TridentTopology) -> String {
    t.build()
        .expect_err("the topology must be refused")
        .to_string()
}

#[test]
fn unknown_input_fields_are_named() {
    let mut t = TridentTopology::new();
    t.new_stream("s", spout()).each(["line"], noop, ["word"]);
    let e = error_of(t);
    assert!(
        e.contains("each(") && e.contains("'line'") && e.contains("[sentence]"),
        "{e}"
    );
}

#[test]
fn an_output_field_that_exists_already_is_refused() {
    let mut t = TridentTopology::new();
    t.new_stream("s", spout())
        .each(["sentence"], noop, ["sentence"]);
    let e = error_of(t);
    assert!(
        e.contains("output field 'sentence' is already a field"),
        "{e}"
    );
}

#[test]
fn stream_names_must_be_unique_and_valid() {
    let mut t = TridentTopology::new();
    t.new_stream("s", spout());
    t.new_stream("s", spout());
    assert!(error_of(t).contains("two streams are named 's'"));
    let mut t = TridentTopology::new();
    t.new_stream("a/b", spout());
    assert!(error_of(t).contains("contain no '/'"));
}

#[test]
fn a_drpc_stream_must_end_in_one_place() {
    let mut t = TridentTopology::new();
    let s = t.new_drpc_stream("f");
    s.each(["args"], noop, ["x"]);
    s.each(["args"], noop, ["y"]);
    let e = error_of(t);
    assert!(e.contains("DRPC stream drpc-f ends in 2 places"), "{e}");
    let mut t = TridentTopology::new();
    t.new_drpc_stream("g")
        .group_by(["args"])
        .persistent_aggregate(MemoryMapState::transactional(), Count, ["n"]);
    let e = error_of(t);
    assert!(e.contains("a DRPC stream cannot persist state"), "{e}");
}

#[test]
fn a_combiner_has_one_output_field() {
    let mut t = TridentTopology::new();
    t.new_stream("s", spout())
        .aggregate(["sentence"], Sum, ["a", "b"]);
    assert!(error_of(t).contains("one output field"));
}

#[test]
fn no_streams_at_all_is_refused() {
    assert!(error_of(TridentTopology::new()).contains("no streams"));
}

#[test]
fn trident_without_ackers_is_refused_when_it_starts() {
    let mut t = TridentTopology::new();
    t.new_stream("noack", spout())
        .group_by(["sentence"])
        .persistent_aggregate(MemoryMapState::transactional(), Count, ["n"]);
    let mut conf = Config::new();
    conf.set_num_ackers(0);
    let err = LocalCluster::new()
        .submit_topology("noack", &conf, &t.build().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("topology.acker.executors must not be 0"),
        "{err}"
    );
}
