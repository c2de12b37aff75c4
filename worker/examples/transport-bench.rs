//! Throughput of the worker-to-worker transport over loopback: one sender thread feeds a
//! `Lane` batches of 256 one-field tuples; a `TransportServer` hands them to a
//! queue that one thread drains. Prints one JSON line. `--anchored` tuples belong to one
//! tree each, or with `--per-tree N` to trees of N consecutive tuples (a split bolt's
//! words of one sentence).
//!
//! ```text
//! cargo run --release -p squall-worker --example transport-bench -- [--secs 10] [--words] [--anchored [--per-tree N]]
//! ```

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use squall_api::{values, Anchors, TaskId};
use squall_worker::message::{Envelope, Msg, Packet};
use squall_worker::transport::{
    connect_lane, Identity, LocalExecutor, LocalRouter, Role, TransportServer,
};

const BATCH: usize = 256;
const WORDS: [&str; 8] = [
    "the", "cow", "jumped", "over", "moon", "an", "apple", "nature",
];

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |flag: &str, default: u64| -> u64 {
        match args.iter().position(|a| a == flag).map(|i| args.get(i + 1)) {
            None => default,
            Some(v) => match v.and_then(|s| s.parse().ok()) {
                Some(n) if n > 0 => n,
                _ => {
                    eprintln!("transport-bench: {flag} takes a positive number");
                    std::process::exit(2)
                }
            },
        }
    };
    let secs = number("--secs", 10);
    let words = args.iter().any(|a| a == "--words");
    let anchored = args.iter().any(|a| a == "--anchored");
    let per_tree = number("--per-tree", 1);

    let (q, rx) = crossbeam_channel::bounded::<Packet>(64);
    let executor = LocalExecutor {
        first: TaskId(1),
        last: TaskId(1),
        role: Role::Bolt,
        queue: q,
        blocked_ns: Default::default(),
    };
    let router = LocalRouter::new(vec![executor], 1, TaskId(2));
    let identity = Identity::new("bench", 1, "sender");
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let server = TransportServer::start(listener, identity.clone(), router)?;
    let (tx, client) = connect_lane(server.local_addr(), &identity, TaskId(1), Some(64))?;

    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let drain = {
        let received = received.clone();
        std::thread::spawn(move || {
            let mut local = 0u64;
            while let Ok(p) = rx.recv() {
                if let Packet::Batch(b) = p {
                    local += b.len() as u64;
                    received.store(local, Ordering::Relaxed);
                }
            }
        })
    };
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<Envelope> = (0..BATCH)
                    .map(|_| {
                        n += 1;
                        let values = if words {
                            values![WORDS[n as usize % WORDS.len()]]
                        } else {
                            values![n]
                        };
                        let anchors = if anchored {
                            Anchors::single((n / per_tree).wrapping_mul(0x9e37_79b9_7f4a_7c15), n)
                        } else {
                            Anchors::none()
                        };
                        Envelope {
                            task: TaskId(1),
                            msg: Msg::Tuple {
                                stream: 0,
                                source: TaskId(2),
                                values,
                                anchors,
                            },
                        }
                    })
                    .collect();
                if tx.send(Packet::Batch(batch)).is_err() {
                    break;
                }
            }
        })
    };

    std::thread::sleep(Duration::from_secs(2));
    let (t0, n0, s0) = (
        Instant::now(),
        received.load(Ordering::Relaxed),
        client.stats(),
    );
    std::thread::sleep(Duration::from_secs(secs));
    let (t1, n1, s1) = (
        Instant::now(),
        received.load(Ordering::Relaxed),
        client.stats(),
    );
    stop.store(true, Ordering::Relaxed);
    sender.join().expect("sender thread");
    drop(client);
    drop(server);
    drain.join().expect("drain thread");

    let dt = (t1 - t0).as_secs_f64();
    let envelopes = (n1 - n0) as f64 / dt;
    let bytes = (s1.bytes_sent - s0.bytes_sent) as f64 / dt;
    println!(
        "{{\"bench\":\"transport\",\"values\":\"{}\",\"anchored\":{anchored},\"batch\":{BATCH},\"secs\":{secs},\"envelopes_per_sec\":{envelopes:.0},\"mib_per_sec\":{:.1},\"bytes_per_envelope\":{:.1}}}",
        if words { "word" } else { "int" },
        bytes / (1 << 20) as f64,
        bytes / envelopes,
    );
    Ok(())
}
