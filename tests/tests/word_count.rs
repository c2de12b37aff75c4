//! WordCountTopology in local mode: the counts add up.

use std::time::{Duration, Instant};

use squall_api::Config;
use squall_examples::{word_count_topology, WordCountOptions, WordCounts, SENTENCES};
use squall_worker::LocalCluster;

#[test]
fn word_counts_match_the_sentences_acked() {
    let counts = WordCounts::default();
    let topology = word_count_topology(&WordCountOptions {
        splitters: 2,
        counters: 3,
        report: Some((1, counts.clone())),
        ..Default::default()
    })
    .unwrap();
    let mut conf = Config::new();
    conf.set_max_spout_pending(500);
    let cluster = LocalCluster::new();
    cluster.submit_topology("wc", &conf, &topology).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    cluster.deactivate("wc").unwrap();

    // Once deactivated, every sentence completes and the next report carries the final
    // counts: their sum equals the words the count bolts acked (ticks are executed but not acked).
    let end = Instant::now() + Duration::from_secs(60);
    let (stats, total) = loop {
        let stats = cluster.stats("wc").unwrap();
        let total: u64 = counts.lock().unwrap().values().sum();
        let spout = stats.component("spout");
        if spout.acked == spout.emitted && total == stats.component("count").acked && total > 0 {
            break (stats, total);
        }
        assert!(
            Instant::now() < end,
            "counts never settled: {stats:?}, reported {total}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    cluster.kill_topology("wc").unwrap();

    let spout = stats.component("spout");
    assert_eq!(spout.failed, 0);
    let c = counts.lock().unwrap().clone();
    let get = |w: &str| c.get(w).copied().unwrap_or(0);
    // The spout cycles the sentences in order, so sentence counts differ by at most one
    // and words of one sentence are counted equally often.
    let per_sentence: Vec<u64> = ["cow", "apple", "score", "snow", "nature"]
        .map(get)
        .to_vec();
    assert_eq!(per_sentence.iter().sum::<u64>(), spout.acked);
    assert!(per_sentence.iter().max().unwrap() - per_sentence.iter().min().unwrap() <= 1);
    assert_eq!(get("cow"), get("moon"));
    assert_eq!(get("the"), 2 * get("cow") + get("doctor") + get("dwarfs"));
    assert_eq!(get("seven"), get("score") + get("snow"));
    let words_per_cycle: u64 = SENTENCES.iter().map(|s| s.split(' ').count() as u64).sum();
    assert!(total >= words_per_cycle * (spout.acked / 5));
}
