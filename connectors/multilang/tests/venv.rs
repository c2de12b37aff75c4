//! Resources with Python requirements: the venv is made on first use, once, under a
//! lock, even with two tasks asking at the same time. (Its own test binary: it sets
//! `SQUALL_MULTILANG_CACHE` for the process.)

mod common;

use common::{conf, wait_until, Collect, Items, Running};
use squall_api::{BoxError, TopologyBuilder};
use squall_multilang::{Resources, ShellBolt};

#[test]
fn python_requirements_get_a_venv_made_once() -> Result<(), BoxError> {
    let cache = tempfile::tempdir()?;
    std::env::set_var("SQUALL_MULTILANG_CACHE", cache.path());
    let split = ShellBolt::new(["python3", "split.py"])
        .resources(
            Resources::new()
                .file("split.py", include_str!("fixtures/pystorm_split.py"))
                .python_requirements("pystorm==3.1.4\n"),
        )
        .output_fields(["word"]);
    let sink = Collect::default();
    let mut b = TopologyBuilder::new();
    b.set_spout(
        "spout",
        Items::new(vec!["a b c".into(), "d e".into()], None),
        1,
    );
    // Two executors: two tasks race to make the venv.
    b.set_bolt("split", split, 2).shuffle_grouping("spout");
    b.set_bolt("sink", sink.clone(), 1)
        .shuffle_grouping("split");
    let run = Running::start("venv", &conf(), &b.create_topology()?);
    assert!(
        wait_until(60, || sink.seen().len() == 5),
        "errors: {:?}",
        run.errors()
    );
    let venvs: Vec<_> = std::fs::read_dir(cache.path())?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("venv-") && !n.ends_with(".lock"))
        .collect();
    assert_eq!(venvs.len(), 1, "{venvs:?}");
    assert!(cache.path().join(&venvs[0]).join(".squall-ready").exists());
    assert!(run.errors().is_empty(), "{:?}", run.errors());
    Ok(())
}
