//! [`LocalDrpc`]: an in-process DRPC server for local mode.

use std::sync::Arc;
use std::time::Duration;

use crate::core::{Core, Settings, FETCH_WAIT};
use crate::{DrpcError, DrpcInvocations, DrpcRequest};

/// An in-process DRPC server (Storm's `LocalDRPC`). Cloning gives another handle to the
/// same server. Hand it to `TridentTopology::new_local_drpc_stream` and call
/// [`execute`](Self::execute) from any thread.
///
/// It behaves as `squall drpc` does: a request waits for the topology's answer up to the
/// request timeout ([`DrpcError::Timeout`]); a function whose topology stops fetching
/// for the fetcher timeout (10 s; a killed topology) fails its outstanding requests
/// ([`DrpcError::Failed`]); answered requests are forgotten. Fetched requests carry an
/// empty `server`.
///
/// ```
/// use squall_drpc::{DrpcInvocations, LocalDrpc};
///
/// let drpc = LocalDrpc::new();
/// // The topology's side: fetch requests of "exclaim" and answer them.
/// let topology = drpc.clone();
/// std::thread::spawn(move || loop {
///     for req in topology.fetch("exclaim", 10).unwrap() {
///         topology.result(&req.server, &req.id, &format!("{}!", req.args)).unwrap();
///     }
/// });
/// assert_eq!(drpc.execute("exclaim", "hello").unwrap(), "hello!");
/// ```
#[derive(Clone)]
pub struct LocalDrpc {
    core: Arc<Core>,
}

impl Default for LocalDrpc {
    fn default() -> Self {
        LocalDrpc::new()
    }
}

impl std::fmt::Debug for LocalDrpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.core.settings();
        f.debug_struct("LocalDrpc")
            .field("request_timeout", &s.request_timeout)
            .field("fetcher_timeout", &s.fetcher_timeout)
            .finish_non_exhaustive()
    }
}

impl LocalDrpc {
    /// A new server with Storm's default request timeout (`drpc.request.timeout.secs`,
    /// 600 s) and Squall's fetcher timeout (`squall.drpc.fetcher.timeout.secs`, 10 s).
    pub fn new() -> Self {
        LocalDrpc::with_timeouts(
            Settings::default().request_timeout,
            Settings::default().fetcher_timeout,
        )
    }

    /// A new server whose requests time out after `request_timeout` (for tests).
    pub fn with_timeout(request_timeout: Duration) -> Self {
        LocalDrpc::with_timeouts(request_timeout, Settings::default().fetcher_timeout)
    }

    /// A new server with both timeouts: `request_timeout` for every request, and
    /// `fetcher_timeout` of silence after which a function that was being fetched fails
    /// its outstanding requests. A fetcher timeout shorter than a second is raised to
    /// one second, so a fetcher that is merely between two fetches never counts as gone.
    pub fn with_timeouts(request_timeout: Duration, fetcher_timeout: Duration) -> Self {
        LocalDrpc {
            core: Core::new(
                Settings {
                    request_timeout,
                    fetcher_timeout: fetcher_timeout.max(Duration::from_secs(1)),
                },
                String::new(),
            ),
        }
    }

    /// Calls `function` with `args` and waits for the topology's answer.
    ///
    /// Errors: [`DrpcError::Timeout`] when no answer came within the request timeout,
    /// [`DrpcError::Failed`] when the topology failed the request (or stopped serving the
    /// function), [`DrpcError::Refused`] for an invalid function name (empty, over 256
    /// bytes, or with control characters).
    pub fn execute(&self, function: &str, args: &str) -> Result<String, DrpcError> {
        self.core.submit(function, args)?.wait()
    }
}

impl DrpcInvocations for LocalDrpc {
    fn fetch(&self, function: &str, max: usize) -> Result<Vec<DrpcRequest>, DrpcError> {
        self.core.fetch(function, max, FETCH_WAIT)
    }
    fn result(&self, _server: &str, id: &str, result: &str) -> Result<(), DrpcError> {
        self.core.result(id, result)
    }
    fn fail(&self, _server: &str, id: &str, message: &str) -> Result<(), DrpcError> {
        self.core.fail(id, message)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// A topology stand-in: answers `function` with `answer(args)` until told to stop.
    fn serve(
        drpc: &LocalDrpc,
        function: &'static str,
        answer: fn(&str) -> Result<String, String>,
    ) -> (
        std::thread::JoinHandle<()>,
        Arc<std::sync::atomic::AtomicBool>,
    ) {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (d, s) = (drpc.clone(), stop.clone());
        let h = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                for req in d.fetch(function, 8).unwrap() {
                    match answer(&req.args) {
                        Ok(r) => d.result(&req.server, &req.id, &r).unwrap(),
                        Err(m) => d.fail(&req.server, &req.id, &m).unwrap(),
                    }
                }
            }
        });
        (h, stop)
    }

    #[test]
    fn execute_gets_the_topologys_answer() {
        let drpc = LocalDrpc::new();
        let (h, stop) = serve(&drpc, "upper", |a| Ok(a.to_uppercase()));
        assert_eq!(drpc.execute("upper", "abc").unwrap(), "ABC");
        assert_eq!(drpc.execute("upper", "").unwrap(), "");
        assert_eq!(drpc.execute("upper", "grüße").unwrap(), "GRÜSSE");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        h.join().unwrap();
    }

    #[test]
    fn concurrent_callers_each_get_their_own_answer() {
        let drpc = LocalDrpc::new();
        let (h, stop) = serve(&drpc, "double", |a| Ok(format!("{a}{a}")));
        let callers: Vec<_> = (0..16)
            .map(|i| {
                let d = drpc.clone();
                std::thread::spawn(move || {
                    for j in 0..20 {
                        let arg = format!("{i}-{j}.");
                        assert_eq!(d.execute("double", &arg).unwrap(), format!("{arg}{arg}"));
                    }
                })
            })
            .collect();
        for c in callers {
            c.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        h.join().unwrap();
    }

    #[test]
    fn a_failed_request_is_failed_with_the_topologys_message() {
        let drpc = LocalDrpc::new();
        let (h, stop) = serve(&drpc, "strict", |a| {
            if a == "bad" {
                Err("bad input".into())
            } else {
                Ok(a.into())
            }
        });
        assert_eq!(
            drpc.execute("strict", "bad"),
            Err(DrpcError::Failed {
                function: "strict".into(),
                message: "bad input".into()
            })
        );
        assert_eq!(drpc.execute("strict", "ok").unwrap(), "ok");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        h.join().unwrap();
    }

    #[test]
    fn with_timeout_times_out_unserved_requests() {
        let drpc = LocalDrpc::with_timeout(Duration::from_millis(300));
        let start = Instant::now();
        let e = drpc.execute("nobody-serves-this", "x").unwrap_err();
        assert_eq!(
            e,
            DrpcError::Timeout {
                function: "nobody-serves-this".into(),
                secs: 1
            }
        );
        assert!(start.elapsed() >= Duration::from_millis(250));
        assert!(e.to_string().contains("timed out"), "{e}");
    }

    #[test]
    fn a_killed_topology_fails_its_requests_instead_of_hanging() {
        let drpc = LocalDrpc::with_timeouts(Duration::from_secs(60), Duration::from_secs(1));
        // The "topology" fetches the request, then dies without answering.
        let d = drpc.clone();
        let fetcher = std::thread::spawn(move || loop {
            if !d.fetch("words", 1).unwrap().is_empty() {
                return;
            }
        });
        let start = Instant::now();
        let e = drpc.execute("words", "cat dog").unwrap_err();
        fetcher.join().unwrap();
        assert!(
            matches!(&e, DrpcError::Failed { message, .. } if message.contains("was it killed?")),
            "{e}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn unknown_ids_are_refused_not_panicking() {
        let drpc = LocalDrpc::new();
        assert!(matches!(
            drpc.result("", "nope", "x"),
            Err(DrpcError::Refused(_))
        ));
        assert!(matches!(
            drpc.fail("", "nope", "x"),
            Err(DrpcError::Refused(_))
        ));
        assert!(matches!(drpc.execute("", "x"), Err(DrpcError::Refused(_))));
    }
}
