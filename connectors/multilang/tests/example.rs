//! The `multilang-word-count` example, run as a user runs it: local mode for 3 s, in a
//! fresh Python env cache (so it makes its venv as on a first run). It exits 0 and
//! prints the top words, which are the five sentences' words in their proportions.

use std::collections::BTreeSet;
use std::process::Command;

use squall_examples::SENTENCES;

#[test]
fn multilang_word_count_prints_the_top_words() {
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_multilang-word-count"))
        .args(["--seconds", "3", "--top", "5"])
        .env("SQUALL_MULTILANG_CACHE", cache.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let all = format!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{}: {all}", out.status);

    // "Top 5 words:" then five "  word  count" lines, most frequent first.
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == "Top 5 words:")
        .unwrap_or_else(|| panic!("no top words: {all}"));
    let top: Vec<(String, u64)> = lines[at + 1..at + 6]
        .iter()
        .map(|l| {
            let mut f = l.split_whitespace();
            let word = f.next().unwrap().to_owned();
            let count = f.next().and_then(|c| c.parse().ok());
            (
                word,
                count.unwrap_or_else(|| panic!("not a count line: {l:?}")),
            )
        })
        .collect();
    let words: BTreeSet<&str> = SENTENCES.iter().flat_map(|s| s.split(' ')).collect();
    assert!(
        top.iter().all(|(w, _)| words.contains(w.as_str())),
        "{top:?}"
    );
    assert!(top.windows(2).all(|p| p[0].1 >= p[1].1), "{top:?}");
    // "the" is 4 of every 5 sentences' words, "and" and "seven" 2: by far the first.
    assert_eq!(top[0].0, "the", "{top:?}");
    assert!(top[0].1 > 100, "{top:?}");
    let and = top.iter().find(|(w, _)| w == "and").map(|(_, c)| *c);
    assert!(
        and.is_some_and(|and| and * 3 < top[0].1 * 2),
        "'and' should count about half of 'the': {top:?}"
    );

    // The summary: sentences went through Python and were acked, no errors.
    let acked: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("sentences acked"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no acked count: {all}"));
    assert!(acked > 100, "{acked} sentences acked: {all}");
    assert!(!text.contains("errors reported"), "{all}");
    assert!(
        std::fs::read_dir(cache.path())
            .unwrap()
            .flatten()
            .any(|e| e.path().join(".squall-ready").exists()),
        "the venv was made in SQUALL_MULTILANG_CACHE"
    );
}
