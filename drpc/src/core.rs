//! The DRPC core, shared by the `squall drpc` daemon and [`LocalDrpc`](crate::LocalDrpc):
//! per function a queue of pending requests, the waiting clients, and the fetchers.
//!
//! - [`Core::submit`] queues a request and hands back a [`Ticket`]; the client waits on
//!   it, blocking ([`Ticket::wait`]) or in async code ([`Ticket::wait_async`]), until an
//!   answer, a failure or a timeout. A ticket dropped before its answer (a client that
//!   went away) withdraws its request.
//! - [`Core::fetch`] / [`Core::fetch_async`] take up to `max` pending requests of a
//!   function, waiting a short while (a long poll) when none is pending. `max` 0 takes
//!   nothing and does not wait: a heartbeat of a fetcher that cannot take requests now.
//! - [`Core::result`] / [`Core::fail`] answer a request; an id that is not outstanding
//!   (never issued, answered already, timed out) is refused.
//!
//! Expiry needs no background task: each waiter wakes at its own next deadline (its
//! request timeout, or the moment its function's fetcher would count as gone) and
//! expires what is due. A function whose fetcher falls silent (no fetch, result or fail)
//! for the fetcher timeout fails every outstanding request (fetched or not) and counts
//! as unserved again, so
//! later requests wait for a new fetcher (a redeployed topology) up to the request
//! timeout, as requests for a function never fetched do.
//!
//! Answers are delivered while the state lock is held, so a request is either
//! outstanding (in the map) or its outcome is already in its ticket. Requests leave the
//! map when answered, failed, expired or withdrawn; functions without requests leave it
//! once no fetcher has asked for them within the fetcher timeout.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::{DrpcError, DrpcRequest};

/// Longest function name accepted, in bytes.
pub(crate) const MAX_FUNCTION_LEN: usize = 256;

/// How long a fetch waits for a request when none is pending.
pub(crate) const FETCH_WAIT: Duration = Duration::from_millis(200);

/// How often, at most, idle function entries are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The outcome a waiting client gets.
pub(crate) type Outcome = Result<String, DrpcError>;

/// Timeouts of a core.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    /// How long a request waits for its answer (`drpc.request.timeout.secs`).
    pub request_timeout: Duration,
    /// How long a served function may go without a fetch before its requests fail
    /// (`squall.drpc.fetcher.timeout.secs`).
    pub fetcher_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            request_timeout: Duration::from_secs(600),
            fetcher_timeout: Duration::from_secs(10),
        }
    }
}

/// Checks a function name: 1 to 256 bytes, no control characters.
pub(crate) fn check_function(function: &str) -> Result<(), DrpcError> {
    if function.is_empty() {
        return Err(DrpcError::Refused(
            "the DRPC function name is empty".to_owned(),
        ));
    }
    if function.len() > MAX_FUNCTION_LEN || function.chars().any(char::is_control) {
        let shown: String = function.chars().take(64).collect();
        return Err(DrpcError::Refused(format!(
            "invalid DRPC function name '{}': use 1-{MAX_FUNCTION_LEN} bytes without control \
             characters",
            shown.escape_debug()
        )));
    }
    Ok(())
}

/// Where one request's outcome lands, and how its waiter is woken (a condition variable
/// for blocking waiters, a [`Notify`] for async ones).
#[derive(Default)]
struct Completion {
    slot: Mutex<Slot>,
    cv: Condvar,
    notify: Notify,
}

#[derive(Default)]
struct Slot {
    outcome: Option<Outcome>,
    /// Bumped to make the waiter look at its deadlines again.
    pokes: u64,
}

impl Completion {
    fn complete(&self, outcome: Outcome) {
        let mut s = lock(&self.slot);
        if s.outcome.is_none() {
            s.outcome = Some(outcome);
            self.wake();
        }
    }

    /// Wakes the waiter without an outcome, so it computes its next deadline again.
    fn poke(&self) {
        lock(&self.slot).pokes += 1;
        self.wake();
    }

    fn wake(&self) {
        self.cv.notify_all();
        // Stores a permit when the waiter is not waiting right now.
        self.notify.notify_one();
    }

    fn take(&self) -> Option<Outcome> {
        lock(&self.slot).outcome.take()
    }

    /// Waits until an outcome is there, `until` passes or the waiter is poked; takes the
    /// outcome.
    fn wait_until(&self, until: Instant) -> Option<Outcome> {
        let mut s = lock(&self.slot);
        let pokes = s.pokes;
        loop {
            if let Some(o) = s.outcome.take() {
                return Some(o);
            }
            let now = Instant::now();
            if now >= until || s.pokes != pokes {
                return None;
            }
            s = self
                .cv
                .wait_timeout(s, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state stays consistent across every early return, so a panic elsewhere while
    // holding the lock leaves nothing half-done worth refusing service over.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One outstanding request.
struct Request {
    function: String,
    args: String,
    fetched: bool,
    deadline: Instant,
    completion: Arc<Completion>,
}

/// One function's queue and fetcher record.
struct Function {
    /// Ids of requests not fetched yet, oldest first.
    pending: VecDeque<String>,
    /// Requests of this function in the map, fetched or not.
    outstanding: usize,
    /// When a fetcher last asked for this function (`None`: not served).
    last_fetch: Option<Instant>,
    /// Async fetchers waiting for a request.
    arrivals: Arc<Notify>,
}

impl Function {
    fn new() -> Self {
        Function {
            pending: VecDeque::new(),
            outstanding: 0,
            last_fetch: None,
            arrivals: Arc::new(Notify::new()),
        }
    }
}

struct State {
    functions: HashMap<String, Function>,
    requests: HashMap<String, Request>,
    /// Set when the server shuts down: every new request gets this.
    closed: Option<DrpcError>,
    last_sweep: Instant,
}

/// Pending requests, waiters and fetchers of one DRPC server.
pub(crate) struct Core {
    state: Mutex<State>,
    /// Blocking fetchers wait here for a new request.
    arrivals: Condvar,
    settings: Settings,
    /// What fetched requests carry as their `server`.
    server: String,
}

/// What [`State::due`] found for a request.
enum Due {
    /// The request is gone: its outcome is in its ticket.
    Gone,
    /// Nothing due before this instant.
    Until(Instant),
}

impl State {
    fn remove(&mut self, id: &str) -> Option<Request> {
        let req = self.requests.remove(id)?;
        if let Some(f) = self.functions.get_mut(&req.function) {
            f.outstanding = f.outstanding.saturating_sub(1);
            if !req.fetched {
                f.pending.retain(|p| p != id);
            }
            if f.outstanding == 0 && f.last_fetch.is_none() {
                self.functions.remove(&req.function);
            }
        }
        Some(req)
    }

    /// Fails every outstanding request of `function`, whose fetcher fell silent, and
    /// forgets the fetcher.
    fn fail_silent_function(&mut self, function: &str, now: Instant) {
        let Some(f) = self.functions.get_mut(function) else {
            return;
        };
        let Some(last) = f.last_fetch.take() else {
            return;
        };
        let ago = now.saturating_duration_since(last).as_secs_f64().round() as u64;
        let message = format!(
            "no topology is serving DRPC function '{function}' any more (no fetch or answer \
             for {ago} s); was it killed?"
        );
        let ids: Vec<String> = self
            .requests
            .iter()
            .filter(|(_, r)| r.function == function)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some(req) = self.remove(&id) {
                req.completion.complete(Err(DrpcError::Failed {
                    function: function.to_owned(),
                    message: message.clone(),
                }));
            }
        }
        if let Some(f) = self.functions.get(function) {
            if f.outstanding == 0 {
                self.functions.remove(function);
            }
        }
    }

    /// Expires what is due for request `id` (its timeout, or its function's fetcher
    /// going silent) and says until when nothing else is.
    fn due(&mut self, id: &str, settings: &Settings, now: Instant) -> Due {
        let Some(req) = self.requests.get(id) else {
            return Due::Gone;
        };
        let deadline = req.deadline;
        let function = req.function.clone();
        let silent_at = self
            .functions
            .get(&function)
            .and_then(|f| f.last_fetch)
            .map(|t| t + settings.fetcher_timeout);
        if silent_at.is_some_and(|t| now >= t) {
            self.fail_silent_function(&function, now);
            return Due::Gone;
        }
        if now >= deadline {
            if let Some(req) = self.remove(id) {
                req.completion.complete(Err(DrpcError::Timeout {
                    function,
                    secs: whole_secs(settings.request_timeout),
                }));
            }
            return Due::Gone;
        }
        Due::Until(silent_at.map_or(deadline, |t| t.min(deadline)))
    }

    /// Takes up to `max` pending requests of `function` and records the fetch.
    fn take(&mut self, function: &str, max: usize, server: &str, now: Instant) -> Vec<DrpcRequest> {
        let f = self
            .functions
            .entry(function.to_owned())
            .or_insert_with(Function::new);
        if f.last_fetch.replace(now).is_none() && f.outstanding > 0 {
            // Served from now on: its waiters get a deadline for the fetcher going silent.
            for req in self.requests.values().filter(|r| r.function == function) {
                req.completion.poke();
            }
        }
        let mut out = Vec::new();
        while out.len() < max {
            let Some(id) = f.pending.pop_front() else {
                break;
            };
            if let Some(req) = self.requests.get_mut(&id) {
                req.fetched = true;
                out.push(DrpcRequest {
                    id,
                    args: req.args.clone(),
                    server: server.to_owned(),
                });
            }
        }
        out
    }

    /// Removes request `id`, being answered; the answer shows its function is still
    /// served (as a fetch does).
    fn answered(&mut self, id: &str) -> Result<Request, DrpcError> {
        let req = self.remove(id).ok_or_else(|| unknown_id(id))?;
        if let Some(f) = self.functions.get_mut(&req.function) {
            if f.last_fetch.is_some() {
                f.last_fetch = Some(Instant::now());
            }
        }
        Ok(req)
    }

    /// Forgets functions without requests whose fetcher is gone (at most once a second).
    fn sweep(&mut self, settings: &Settings, now: Instant) {
        if now.saturating_duration_since(self.last_sweep) < SWEEP_EVERY {
            return;
        }
        self.last_sweep = now;
        self.functions.retain(|_, f| {
            f.outstanding > 0
                || f.last_fetch
                    .is_some_and(|t| now.saturating_duration_since(t) < settings.fetcher_timeout)
        });
    }
}

/// Seconds of a timeout as an error shows them (at least 1).
fn whole_secs(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

impl Core {
    /// A core whose fetched requests name `server` (`host:port`, empty in-process).
    pub(crate) fn new(settings: Settings, server: String) -> Arc<Core> {
        Arc::new(Core {
            state: Mutex::new(State {
                functions: HashMap::new(),
                requests: HashMap::new(),
                closed: None,
                last_sweep: Instant::now(),
            }),
            arrivals: Condvar::new(),
            settings,
            server,
        })
    }

    /// The timeouts.
    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Queues a request of `function` with `args`; the ticket waits for its outcome.
    pub(crate) fn submit(
        self: &Arc<Self>,
        function: &str,
        args: &str,
    ) -> Result<Ticket, DrpcError> {
        check_function(function)?;
        let now = Instant::now();
        let completion = Arc::new(Completion::default());
        let mut st = lock(&self.state);
        if let Some(e) = &st.closed {
            return Err(e.clone());
        }
        st.sweep(&self.settings, now);
        let id = loop {
            let id = format!("{:016x}", fastrand::u64(..));
            if !st.requests.contains_key(&id) {
                break id;
            }
        };
        st.requests.insert(
            id.clone(),
            Request {
                function: function.to_owned(),
                args: args.to_owned(),
                fetched: false,
                deadline: now + self.settings.request_timeout,
                completion: completion.clone(),
            },
        );
        let f = st
            .functions
            .entry(function.to_owned())
            .or_insert_with(Function::new);
        f.pending.push_back(id.clone());
        f.outstanding += 1;
        f.arrivals.notify_waiters();
        drop(st);
        self.arrivals.notify_all();
        Ok(Ticket {
            core: self.clone(),
            id,
            completion,
            done: false,
        })
    }

    /// Takes up to `max` pending requests of `function`, waiting up to `wait` for one
    /// when none is pending. Blocks the calling thread.
    pub(crate) fn fetch(
        &self,
        function: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<DrpcRequest>, DrpcError> {
        check_function(function)?;
        // `max` 0 takes nothing: it only tells that the function is still served.
        let wait = if max == 0 { Duration::ZERO } else { wait };
        let deadline = Instant::now() + wait;
        let mut st = lock(&self.state);
        loop {
            let now = Instant::now();
            st.sweep(&self.settings, now);
            let got = st.take(function, max, &self.server, now);
            if !got.is_empty() || now >= deadline || st.closed.is_some() {
                return Ok(got);
            }
            st = self
                .arrivals
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    #[cfg(any(feature = "server", test))]
    /// [`fetch`](Self::fetch) for async callers: waits without blocking the thread.
    pub(crate) async fn fetch_async(
        &self,
        function: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<DrpcRequest>, DrpcError> {
        check_function(function)?;
        let wait = if max == 0 { Duration::ZERO } else { wait };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let arrivals = {
                let mut st = lock(&self.state);
                let now = Instant::now();
                st.sweep(&self.settings, now);
                let got = st.take(function, max, &self.server, now);
                if !got.is_empty() || st.closed.is_some() {
                    return Ok(got);
                }
                st.functions
                    .get(function)
                    .map(|f| f.arrivals.clone())
                    .expect("take created the entry")
            };
            if tokio::time::Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            let notified = arrivals.notified();
            tokio::pin!(notified);
            // Registered before looking again, so an arrival after this look wakes it.
            notified.as_mut().enable();
            {
                let mut st = lock(&self.state);
                let got = st.take(function, max, &self.server, Instant::now());
                if !got.is_empty() || st.closed.is_some() {
                    return Ok(got);
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    /// Answers request `id` with `result`.
    pub(crate) fn result(&self, id: &str, result: &str) -> Result<(), DrpcError> {
        let mut st = lock(&self.state);
        let req = st.answered(id)?;
        req.completion.complete(Ok(result.to_owned()));
        Ok(())
    }

    /// Fails request `id`: its client gets [`DrpcError::Failed`] with `message`.
    pub(crate) fn fail(&self, id: &str, message: &str) -> Result<(), DrpcError> {
        let mut st = lock(&self.state);
        let req = st.answered(id)?;
        let function = req.function.clone();
        req.completion.complete(Err(DrpcError::Failed {
            function,
            message: message.to_owned(),
        }));
        Ok(())
    }

    #[cfg(any(feature = "server", test))]
    /// Fails every outstanding request with `error` and refuses new ones with it; wakes
    /// every fetcher.
    pub(crate) fn close(&self, error: DrpcError) {
        let mut st = lock(&self.state);
        st.closed = Some(error.clone());
        for (_, req) in st.requests.drain() {
            req.completion.complete(Err(error.clone()));
        }
        for f in st.functions.values() {
            f.arrivals.notify_waiters();
        }
        st.functions.clear();
        drop(st);
        self.arrivals.notify_all();
    }

    /// Requests outstanding and functions tracked (for tests of memory use).
    #[cfg(test)]
    pub(crate) fn sizes(&self) -> (usize, usize) {
        let st = lock(&self.state);
        (st.requests.len(), st.functions.len())
    }

    fn withdraw(&self, id: &str) {
        lock(&self.state).remove(id);
    }
}

fn unknown_id(id: &str) -> DrpcError {
    let shown: String = id.chars().take(64).collect();
    DrpcError::Refused(format!(
        "unknown DRPC request id '{}': it was answered, failed or timed out already, or this \
         server never issued it",
        shown.escape_debug()
    ))
}

/// A submitted request, waiting for its outcome. Dropped before the outcome, it
/// withdraws the request.
pub(crate) struct Ticket {
    core: Arc<Core>,
    id: String,
    completion: Arc<Completion>,
    done: bool,
}

impl Ticket {
    /// The request's id.
    #[cfg(test)]
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Until when nothing is due; `None` when the outcome is there.
    fn next_due(&self) -> Option<Instant> {
        let mut st = lock(&self.core.state);
        match st.due(&self.id, &self.core.settings, Instant::now()) {
            Due::Gone => None,
            Due::Until(t) => Some(t),
        }
    }

    /// Waits for the outcome, blocking the calling thread.
    pub(crate) fn wait(mut self) -> Outcome {
        loop {
            if let Some(o) = self.completion.take() {
                self.done = true;
                return o;
            }
            let Some(until) = self.next_due() else {
                continue;
            };
            if let Some(o) = self.completion.wait_until(until) {
                self.done = true;
                return o;
            }
        }
    }

    #[cfg(any(feature = "server", test))]
    /// Waits for the outcome without blocking the thread.
    pub(crate) async fn wait_async(mut self) -> Outcome {
        loop {
            if let Some(o) = self.completion.take() {
                self.done = true;
                return o;
            }
            let Some(until) = self.next_due() else {
                continue;
            };
            let notified = self.completion.notify.notified();
            let _ = tokio::time::timeout_at(until.into(), notified).await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done {
            self.core.withdraw(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(request_ms: u64, fetcher_ms: u64) -> Arc<Core> {
        Core::new(
            Settings {
                request_timeout: Duration::from_millis(request_ms),
                fetcher_timeout: Duration::from_millis(fetcher_ms),
            },
            "h:1".to_owned(),
        )
    }

    #[test]
    fn a_result_reaches_its_waiter_and_the_request_is_forgotten() {
        let c = core(10_000, 10_000);
        let t = c.submit("f", "a").unwrap();
        let got = c.fetch("f", 10, Duration::ZERO).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].args, "a");
        assert_eq!(got[0].server, "h:1");
        assert_eq!(got[0].id, t.id());
        c.result(&got[0].id, "A").unwrap();
        assert_eq!(t.wait(), Ok("A".to_owned()));
        assert_eq!(c.sizes().0, 0);
        // Answered: a second answer is refused, naming the id.
        let e = c.result(&got[0].id, "again").unwrap_err();
        assert!(
            matches!(&e, DrpcError::Refused(m) if m.contains(&got[0].id)),
            "{e}"
        );
    }

    #[test]
    fn fetch_takes_at_most_max_oldest_first_and_only_of_its_function() {
        let c = core(10_000, 10_000);
        let _a: Vec<Ticket> = (0..5)
            .map(|i| c.submit("f", &i.to_string()).unwrap())
            .collect();
        let _g = c.submit("g", "other").unwrap();
        let got = c.fetch("f", 3, Duration::ZERO).unwrap();
        let args: Vec<&str> = got.iter().map(|r| r.args.as_str()).collect();
        assert_eq!(args, ["0", "1", "2"]);
        let got = c.fetch("f", 10, Duration::ZERO).unwrap();
        assert_eq!(got.len(), 2);
        assert!(c.fetch("f", 10, Duration::ZERO).unwrap().is_empty());
        assert_eq!(c.fetch("g", 10, Duration::ZERO).unwrap()[0].args, "other");
    }

    #[test]
    fn an_idle_fetch_waits_and_an_arrival_wakes_it() {
        let c = core(10_000, 10_000);
        let start = Instant::now();
        assert!(c
            .fetch("f", 1, Duration::from_millis(150))
            .unwrap()
            .is_empty());
        assert!(start.elapsed() >= Duration::from_millis(150));
        let c2 = c.clone();
        let fetcher = std::thread::spawn(move || {
            let start = Instant::now();
            let got = c2.fetch("f", 1, Duration::from_secs(10)).unwrap();
            (got, start.elapsed())
        });
        std::thread::sleep(Duration::from_millis(50));
        let _t = c.submit("f", "x").unwrap();
        let (got, took) = fetcher.join().unwrap();
        assert_eq!(got.len(), 1);
        assert!(
            took < Duration::from_secs(5),
            "woken by the arrival: {took:?}"
        );
    }

    #[test]
    fn fail_reaches_the_waiter_as_failed() {
        let c = core(10_000, 10_000);
        let t = c.submit("f", "a").unwrap();
        let id = c.fetch("f", 1, Duration::ZERO).unwrap()[0].id.clone();
        c.fail(&id, "batch failed").unwrap();
        assert_eq!(
            t.wait(),
            Err(DrpcError::Failed {
                function: "f".into(),
                message: "batch failed".into()
            })
        );
        assert!(c.fail(&id, "x").is_err());
    }

    #[test]
    fn unanswered_requests_time_out_and_a_late_answer_is_refused() {
        let c = core(200, 10_000);
        let t = c.submit("f", "a").unwrap();
        let id = c.fetch("f", 1, Duration::ZERO).unwrap()[0].id.clone();
        // Keep fetching so the fetcher stays alive: this is a timeout, not a silence.
        let start = Instant::now();
        assert_eq!(
            t.wait(),
            Err(DrpcError::Timeout {
                function: "f".into(),
                secs: 1
            })
        );
        assert!(start.elapsed() >= Duration::from_millis(150));
        assert!(matches!(c.result(&id, "late"), Err(DrpcError::Refused(_))));
        assert_eq!(
            c.sizes(),
            (0, 1),
            "the fetcher is remembered, the request not"
        );
    }

    #[test]
    fn a_silent_fetcher_fails_fetched_and_pending_requests() {
        let c = core(60_000, 300);
        let fetched = c.submit("words", "a").unwrap();
        c.fetch("words", 1, Duration::ZERO).unwrap();
        let pending = c.submit("words", "b").unwrap();
        let start = Instant::now();
        let waiter = std::thread::spawn(move || pending.wait());
        for outcome in [fetched.wait(), waiter.join().unwrap()] {
            match outcome {
                Err(DrpcError::Failed { function, message }) => {
                    assert_eq!(function, "words");
                    assert!(
                        message.contains("no topology is serving DRPC function 'words' any more")
                            && message.contains("was it killed?"),
                        "{message}"
                    );
                }
                other => panic!("expected Failed, got {other:?}"),
            }
        }
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(c.sizes(), (0, 0), "the function is forgotten");
    }

    #[test]
    fn a_fetcher_that_comes_after_the_waiter_and_dies_still_fails_it() {
        // The waiter starts before the function has any fetcher (no silence deadline
        // yet); the first fetch must give it one.
        let c = core(60_000, 300);
        let t = c.submit("late", "a").unwrap();
        let waiter = std::thread::spawn(move || (t.wait(), Instant::now()));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(c.fetch("late", 1, Duration::ZERO).unwrap().len(), 1);
        let fetched_at = Instant::now();
        let (outcome, at) = waiter.join().unwrap();
        assert!(
            matches!(outcome, Err(DrpcError::Failed { .. })),
            "{outcome:?}"
        );
        let after = at.duration_since(fetched_at);
        assert!(
            after < Duration::from_secs(3),
            "failed {after:?} after the fetch"
        );
    }

    #[test]
    fn a_function_never_fetched_waits_for_the_request_timeout() {
        let c = core(400, 100);
        let start = Instant::now();
        let r = c.submit("nobody", "a").unwrap().wait();
        assert!(matches!(r, Err(DrpcError::Timeout { .. })), "{r:?}");
        assert!(start.elapsed() >= Duration::from_millis(350));
        assert_eq!(c.sizes(), (0, 0));
    }

    #[test]
    fn a_live_fetcher_keeps_requests_waiting() {
        let c = core(60_000, 300);
        let t = c.submit("f", "a").unwrap();
        let c2 = c.clone();
        let answerer = std::thread::spawn(move || {
            // Fetch nothing useful for 1 s (longer than the fetcher timeout), then answer.
            let mut id = None;
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(1) {
                if let Some(r) = c2.fetch("f", 1, FETCH_WAIT).unwrap().pop() {
                    id = Some(r.id);
                }
            }
            c2.result(&id.unwrap(), "done").unwrap();
        });
        assert_eq!(t.wait(), Ok("done".to_owned()));
        answerer.join().unwrap();
    }

    #[test]
    fn heartbeats_and_answers_keep_a_function_served() {
        let c = core(60_000, 300);
        let first = c.submit("f", "a").unwrap();
        let second = c.submit("f", "b").unwrap();
        let ids: Vec<String> = c
            .fetch("f", 2, Duration::ZERO)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        let c2 = c.clone();
        let topology = std::thread::spawn(move || {
            // Heartbeats (max 0: nothing taken, no wait) for twice the fetcher timeout.
            for _ in 0..6 {
                let start = Instant::now();
                assert!(c2.fetch("f", 0, Duration::from_secs(5)).unwrap().is_empty());
                assert!(start.elapsed() < Duration::from_millis(100));
                std::thread::sleep(Duration::from_millis(100));
            }
            // Then only answers: the second comes 450 ms after the last heartbeat (over
            // the fetcher timeout) but 250 ms after the first answer (within it).
            std::thread::sleep(Duration::from_millis(100));
            c2.result(&ids[0], "A").unwrap();
            std::thread::sleep(Duration::from_millis(250));
            c2.result(&ids[1], "B").unwrap();
        });
        assert_eq!(first.wait(), Ok("A".to_owned()));
        assert_eq!(second.wait(), Ok("B".to_owned()));
        topology.join().unwrap();
    }

    #[test]
    fn a_dropped_ticket_withdraws_its_request() {
        let c = core(60_000, 10_000);
        let t = c.submit("f", "a").unwrap();
        drop(t);
        assert_eq!(c.sizes(), (0, 0));
        assert!(c.fetch("f", 1, Duration::ZERO).unwrap().is_empty());
    }

    #[test]
    fn closing_fails_waiters_and_refuses_new_requests() {
        let c = core(60_000, 10_000);
        let t = c.submit("f", "a").unwrap();
        let err = DrpcError::Unreachable {
            server: "h:1".into(),
            message: "shutting down".into(),
        };
        c.close(err.clone());
        assert_eq!(t.wait(), Err(err.clone()));
        assert_eq!(c.submit("f", "b").err(), Some(err));
    }

    #[test]
    fn bad_function_names_are_refused() {
        let c = core(60_000, 10_000);
        for bad in ["", "a\nb", &"x".repeat(300)] {
            assert!(matches!(c.submit(bad, "a"), Err(DrpcError::Refused(_))));
            assert!(matches!(
                c.fetch(bad, 1, Duration::ZERO),
                Err(DrpcError::Refused(_))
            ));
        }
        assert!(c.submit("wörds with spaces/and slashes", "a").is_ok());
    }

    #[test]
    fn fetch_only_functions_are_forgotten_once_their_fetcher_is_gone() {
        let c = core(60_000, 100);
        for i in 0..100 {
            c.fetch(&format!("f{i}"), 1, Duration::ZERO).unwrap();
        }
        assert_eq!(c.sizes().1, 100);
        std::thread::sleep(Duration::from_millis(1100));
        c.fetch("other", 1, Duration::ZERO).unwrap();
        assert_eq!(c.sizes().1, 1);
    }

    #[test]
    fn async_waiters_and_fetchers_work_alongside_blocking_ones() {
        let c = core(60_000, 10_000);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let t = c.submit("f", "a").unwrap();
            let c2 = c.clone();
            let answer = tokio::spawn(async move {
                let got = c2
                    .fetch_async("f", 1, Duration::from_secs(5))
                    .await
                    .unwrap();
                c2.result(&got[0].id, "A").unwrap();
            });
            assert_eq!(t.wait_async().await, Ok("A".to_owned()));
            answer.await.unwrap();

            // An idle async fetch is woken by an arrival.
            let c3 = c.clone();
            let fetch = tokio::spawn(async move {
                c3.fetch_async("g", 1, Duration::from_secs(10))
                    .await
                    .unwrap()
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            let start = Instant::now();
            let _t = c.submit("g", "x").unwrap();
            assert_eq!(fetch.await.unwrap().len(), 1);
            assert!(start.elapsed() < Duration::from_secs(5));

            // Async waiters time out on their own.
            let quick = core(200, 10_000);
            let r = quick.submit("f", "a").unwrap().wait_async().await;
            assert!(matches!(r, Err(DrpcError::Timeout { .. })), "{r:?}");
        });
    }
}
