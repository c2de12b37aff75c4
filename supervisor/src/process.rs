//! Worker processes: the ones this supervisor started (a [`tokio::process::Child`]) and
//! the ones it adopted after a restart (known by pid only), watched and stopped alike.

use std::path::Path;
use std::time::Duration;

use rustix::process::{kill_process, Pid, Signal};

/// How often a stopping process is checked.
const POLL: Duration = Duration::from_millis(50);
/// How long to wait for a process to vanish after SIGKILL.
const AFTER_KILL: Duration = Duration::from_secs(5);

/// A worker process.
#[derive(Debug)]
pub enum Proc {
    /// Started by this supervisor: waited for, so it never lingers as a zombie.
    Child(tokio::process::Child),
    /// Started by an earlier run of the supervisor and adopted: watched through `/proc`.
    Adopted(u32),
}

impl Proc {
    /// The process id (`None` for a child already reaped).
    pub fn pid(&self) -> Option<u32> {
        match self {
            Proc::Child(c) => c.id(),
            Proc::Adopted(pid) => Some(*pid),
        }
    }

    /// Whether the process still runs (a child that exited is reaped here).
    pub fn alive(&mut self) -> bool {
        match self {
            Proc::Child(c) => matches!(c.try_wait(), Ok(None)),
            Proc::Adopted(pid) => pid_alive(*pid),
        }
    }

    /// Whether the process ended through a signal rather than exiting with a code
    /// (unknown for an adopted process: taken as a signal).
    pub fn killed_by_signal(&mut self) -> bool {
        match self {
            Proc::Child(c) => c
                .try_wait()
                .ok()
                .flatten()
                .is_some_and(|status| status.code().is_none()),
            Proc::Adopted(_) => true,
        }
    }

    /// Stops the process: SIGTERM, then SIGKILL when it is still running after `grace`
    /// (`supervisor.worker.shutdown.sleep.secs`). A child is reaped.
    pub async fn stop(&mut self, grace: Duration) {
        if !self.alive() {
            return;
        }
        if let Some(pid) = self.pid() {
            signal(pid, Signal::TERM);
        }
        if self.wait_exit(grace).await {
            return;
        }
        match self {
            Proc::Child(c) => {
                let _ = c.start_kill();
            }
            Proc::Adopted(pid) => signal(*pid, Signal::KILL),
        }
        if !self.wait_exit(AFTER_KILL).await {
            tracing::error!(pid = ?self.pid(), "worker still running after SIGKILL");
        }
    }

    /// Waits up to `limit` for the process to end; whether it did.
    async fn wait_exit(&mut self, limit: Duration) -> bool {
        match self {
            Proc::Child(c) => tokio::time::timeout(limit, c.wait()).await.is_ok(),
            Proc::Adopted(pid) => {
                let end = tokio::time::Instant::now() + limit;
                while pid_alive(*pid) {
                    if tokio::time::Instant::now() >= end {
                        return false;
                    }
                    tokio::time::sleep(POLL).await;
                }
                true
            }
        }
    }
}

fn signal(pid: u32, sig: Signal) {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    if let Err(e) = kill_process(pid, sig) {
        if e != rustix::io::Errno::SRCH {
            tracing::warn!(
                pid = pid.as_raw_nonzero().get(),
                "cannot signal worker: {e}"
            );
        }
    }
}

/// Whether process `pid` exists and is not a zombie (`/proc/<pid>/stat`).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) S ...`: the state follows the last ')' (comm may hold anything).
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// Whether process `pid` is the worker started with `launch_file`: its environment holds
/// `SQUALL_WORKER_SPEC=<launch_file>`, so a recycled pid is never mistaken for it.
pub fn is_worker_of(pid: u32, env_var: &str, launch_file: &Path) -> bool {
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let want = format!("{env_var}={}", launch_file.display());
    environ.split(|&b| b == 0).any(|kv| kv == want.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn sleeper(env: Option<(&str, &str)>, script: &str) -> tokio::process::Child {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c").arg(script).process_group(0);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    }

    #[tokio::test]
    async fn a_kill_by_signal_is_told_from_an_exit_with_a_code() {
        let mut failed = Proc::Child(sleeper(None, "exit 1"));
        while failed.alive() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            !failed.killed_by_signal(),
            "exit 1 is the worker's own failure"
        );
        let mut killed = Proc::Child(sleeper(None, "exec sleep 30"));
        signal(killed.pid().unwrap(), Signal::KILL);
        while killed.alive() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(killed.killed_by_signal());
    }

    #[tokio::test]
    async fn children_get_sigterm_and_stubborn_ones_sigkill_after_the_grace() {
        // Exits on SIGTERM: stopped well before the grace ends.
        let mut p = Proc::Child(sleeper(None, "exec sleep 30"));
        assert!(p.alive());
        let t = Instant::now();
        p.stop(Duration::from_secs(20)).await;
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(!p.alive());
        // Ignores SIGTERM: killed once the grace is over, and reaped.
        let mut p = Proc::Child(sleeper(None, "trap '' TERM; while :; do sleep 0.1; done"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let pid = p.pid().unwrap();
        let t = Instant::now();
        p.stop(Duration::from_millis(500)).await;
        assert!(t.elapsed() >= Duration::from_millis(500));
        assert!(!pid_alive(pid), "no zombie, no survivor");
    }

    #[tokio::test]
    async fn adopted_processes_are_recognised_by_their_launch_file_and_stopped_by_pid() {
        let launch = Path::new("/tmp/squall-test-launch.json");
        let child = sleeper(
            Some(("SQUALL_WORKER_SPEC", "/tmp/squall-test-launch.json")),
            "trap '' TERM; while :; do sleep 0.1; done",
        );
        let pid = child.id().unwrap();
        // `sh -c` has the environment once it runs.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(is_worker_of(pid, "SQUALL_WORKER_SPEC", launch));
        assert!(!is_worker_of(
            pid,
            "SQUALL_WORKER_SPEC",
            Path::new("/tmp/other.json")
        ));
        assert!(!is_worker_of(
            std::process::id(),
            "SQUALL_WORKER_SPEC",
            launch
        ));
        // Watched by pid, as after a supervisor restart. The child handle reaps it in
        // the background (tokio's orphan queue), as init would.
        let mut child = child;
        let reaper = tokio::spawn(async move { child.wait().await });
        let mut p = Proc::Adopted(pid);
        assert!(p.alive());
        p.stop(Duration::from_millis(300)).await;
        reaper.await.unwrap().unwrap();
        assert!(!p.alive());
        assert!(!pid_alive(pid));
    }

    #[test]
    fn missing_processes_are_not_alive() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(u32::MAX));
    }
}
