//! The windowing examples, run as a user would.

use std::process::Command;

fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn rolling_top_words_prints_the_ranking_as_the_window_slides() {
    let out = run(
        env!("CARGO_BIN_EXE_rolling-top-words"),
        &["--seconds", "3", "--window-ms", "1000", "--slide-ms", "500"],
    );
    let rankings: Vec<&str> = out.lines().filter(|l| l.contains("] top 5: ")).collect();
    assert!(rankings.len() >= 3, "{out}");
    for word in ["nathan", "mike", "jackson", "golda", "bertels"] {
        assert!(rankings.last().unwrap().contains(word), "{out}");
    }
    let acked: u64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("words acked"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no acked count in {out}"));
    assert!(acked > 0, "words leave their windows and are acked: {out}");
}

/// Everything but the first line (which names the run time).
fn body(out: &str) -> String {
    out.lines().skip(1).collect::<Vec<_>>().join("\n")
}

#[test]
fn event_time_windows_output_is_the_same_for_a_seed() {
    let bin = env!("CARGO_BIN_EXE_event-time-windows");
    let args = ["--seconds", "3", "--seed", "7", "--batches", "15"];
    let first = run(bin, &args);
    assert!(first.contains("events sent           301 (all)"), "{first}");
    let windows: usize = first.lines().filter(|l| l.starts_with("window (")).count();
    assert!(windows >= 3, "{first}");
    let late: u64 = first
        .lines()
        .find_map(|l| l.trim().strip_prefix("late events"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no late count in {first}"));
    assert!(late > 0, "{first}");
    let in_windows: u64 = first
        .lines()
        .find_map(|l| l.trim().strip_prefix("events in windows"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no window count in {first}"));
    assert_eq!(
        in_windows + late,
        300,
        "every event is in a window or late: {first}"
    );
    let second = run(bin, &args);
    assert_eq!(body(&first), body(&second));
    let other = run(bin, &["--seconds", "3", "--seed", "8", "--batches", "15"]);
    assert_ne!(body(&first), body(&other), "another seed, other events");
}
