//! Multilang resources carried inside the topology binary (Storm ships them in the
//! jar's `resources/` directory): scripts unpacked by each worker into its own
//! directory, and a Python requirements list installed once per machine into a
//! virtual env shared by every worker that needs the same list.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Files (and optionally Python requirements) a shell component needs at run time,
/// compiled into the topology binary with `include_bytes!` / `include_str!`, so
/// `squall jar` needs nothing copied to the cluster's machines by hand.
///
/// Each worker unpacks them into a directory of its own (a per-topology directory
/// under the worker's working directory on a cluster, a temporary directory in local
/// mode) named after their content, and starts the subprocess there, as Storm starts
/// it in the jar's `resources/` directory.
///
/// With [`python_requirements`](Self::python_requirements), a command whose program is
/// `python` or `python3` runs the Python of a virtual env that has them installed:
/// created on first use (`python3 -m venv` and `pip install -r`) under
/// `$SQUALL_MULTILANG_CACHE` (default `~/.cache/squall/multilang`) in a directory
/// named after the list's hash, under a file lock so that concurrent tasks and workers
/// create it once.
///
/// ```
/// use squall_multilang::{Resources, ShellBolt};
/// let split = ShellBolt::new(["python3", "split.py"])
///     .resources(
///         Resources::new()
///             .file("split.py", "import pystorm\n# ...\n")
///             .python_requirements("pystorm==3.1.4\n"),
///     )
///     .output_fields(["word"]);
/// # let _ = split;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    files: Vec<(String, Arc<[u8]>)>,
    requirements: Option<String>,
}

impl Resources {
    /// No files.
    pub fn new() -> Self {
        Resources::default()
    }

    /// Adds a file at relative path `path` (`/`-separated; directories are created).
    ///
    /// # Panics
    /// When `path` is empty, absolute, contains `..` or was added already: a mistake in
    /// the topology's code, found when the topology is built.
    pub fn file(mut self, path: &str, contents: impl AsRef<[u8]>) -> Self {
        let p = Path::new(path);
        let ok = !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
        assert!(
            ok,
            "multilang resource path {path:?} must be relative, without '..' (e.g. \"split.py\" or \"lib/util.py\")"
        );
        assert!(
            self.files.iter().all(|(f, _)| f != path),
            "multilang resource {path:?} added twice"
        );
        self.files.push((path.to_owned(), contents.as_ref().into()));
        self
    }

    /// Sets the Python requirements (a pip requirements file's text, e.g.
    /// `"pystorm==3.1.4\n"`): commands starting with `python`/`python3` then run in a
    /// virtual env that has them.
    pub fn python_requirements(mut self, requirements: &str) -> Self {
        self.requirements = Some(requirements.to_owned());
        self
    }

    /// The Python requirements, if any.
    pub fn requirements(&self) -> Option<&str> {
        self.requirements.as_deref()
    }

    /// The relative paths of the files.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|(p, _)| p.as_str())
    }

    /// A hex digest of the files' paths and contents.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for (path, data) in &self.files {
            h.update((path.len() as u64).to_le_bytes());
            h.update(path.as_bytes());
            h.update((data.len() as u64).to_le_bytes());
            h.update(data);
        }
        hex(&h.finalize()[..12])
    }

    /// Unpacks the files into `base/resources-<digest>` unless a complete copy is there
    /// already; tasks racing to unpack each write a private directory and rename it into
    /// place, so none sees a half-written one.
    pub(crate) fn unpack(&self, base: &Path) -> Result<PathBuf> {
        let target = base.join(format!("resources-{}", self.digest()));
        if target.is_dir() {
            return Ok(target);
        }
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tmp = base.join(format!(
            ".unpacking-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let io = |what: &str, p: &Path, e: std::io::Error| {
            Error::Resources(format!("{what} {}: {e}", p.display()))
        };
        fs::create_dir_all(&tmp).map_err(|e| io("creating", &tmp, e))?;
        for (path, data) in &self.files {
            let dest = tmp.join(path);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(|e| io("creating", parent, e))?;
            }
            fs::write(&dest, data).map_err(|e| io("writing", &dest, e))?;
        }
        match fs::rename(&tmp, &target) {
            Ok(()) => Ok(target),
            // Another task won the race: its copy is complete (renames are atomic).
            Err(_) if target.is_dir() => {
                let _ = fs::remove_dir_all(&tmp);
                Ok(target)
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                Err(io("renaming into", &target, e))
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The directory of the virtual envs: `$SQUALL_MULTILANG_CACHE`, else
/// `$XDG_CACHE_HOME/squall/multilang`, else `~/.cache/squall/multilang`.
pub fn venv_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SQUALL_MULTILANG_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("squall").join("multilang")
}

/// The virtual env with `requirements` installed, created on first use (see
/// [`Resources`]). Returns its directory.
pub fn ensure_venv(requirements: &str) -> Result<PathBuf> {
    let cache = venv_cache_dir();
    let key = hex(&Sha256::digest(requirements.as_bytes())[..12]);
    let venv = cache.join(format!("venv-{key}"));
    let ready = venv.join(".squall-ready");
    if ready.exists() {
        return Ok(venv);
    }
    let fail = |what: String| Error::Venv(format!("{what} (virtual env {})", venv.display()));
    fs::create_dir_all(&cache).map_err(|e| fail(format!("creating {}: {e}", cache.display())))?;
    let lock_path = cache.join(format!("venv-{key}.lock"));
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| fail(format!("opening {}: {e}", lock_path.display())))?;
    // Held until `lock` is dropped (closed), also by a task of another worker.
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| fail(format!("locking {}: {e}", lock_path.display())))?;
    if ready.exists() {
        return Ok(venv);
    }
    tracing::info!(venv = %venv.display(), "creating the multilang Python virtual env (first use)");
    let _ = fs::remove_dir_all(&venv);
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv)).map_err(|e| {
        fail(format!(
            "`python3 -m venv` failed: {e} (is python3 with its venv module installed?)"
        ))
    })?;
    let req_file = venv.join("requirements.txt");
    fs::write(&req_file, requirements)
        .map_err(|e| fail(format!("writing {}: {e}", req_file.display())))?;
    run(Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&req_file))
    .map_err(|e| fail(format!("`pip install -r requirements.txt` failed: {e}")))?;
    File::create(&ready)
        .and_then(|mut f| f.write_all(requirements.as_bytes()))
        .map_err(|e| fail(format!("writing {}: {e}", ready.display())))?;
    drop(lock);
    Ok(venv)
}

/// Runs `cmd`; on failure the error has its exit status and the end of its output.
fn run(cmd: &mut Command) -> std::result::Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    let tail: Vec<&str> = text.lines().rev().take(10).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!("{}: {}", out.status, tail.join(" | ")))
}

/// The directory where a worker keeps its multilang files: `pids/` (the handshake's
/// `pidDir`) and the unpacked resources. On a cluster `multilang/` under the worker's
/// working directory (which is per topology and port); in local mode a temporary
/// directory of this process, removed when the last shell component using it is
/// cleaned up.
pub(crate) struct WorkDir {
    path: PathBuf,
    local: bool,
}

fn local_users() -> &'static Mutex<HashMap<PathBuf, usize>> {
    static USERS: OnceLock<Mutex<HashMap<PathBuf, usize>>> = OnceLock::new();
    USERS.get_or_init(Default::default)
}

impl WorkDir {
    /// The work directory of a cluster worker (`local == false`) or of local mode.
    pub fn acquire(local: bool) -> Result<WorkDir> {
        let path = if local {
            std::env::temp_dir().join(format!("squall-multilang-{}", std::process::id()))
        } else {
            std::env::current_dir()
                .map_err(|e| Error::Resources(format!("the worker's working directory: {e}")))?
                .join("multilang")
        };
        let pids = path.join("pids");
        if local {
            let mut users = local_users().lock().unwrap_or_else(|p| p.into_inner());
            fs::create_dir_all(&pids)
                .map_err(|e| Error::Resources(format!("creating {}: {e}", pids.display())))?;
            *users.entry(path.clone()).or_default() += 1;
        } else {
            fs::create_dir_all(&pids)
                .map_err(|e| Error::Resources(format!("creating {}: {e}", pids.display())))?;
        }
        Ok(WorkDir { path, local })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The handshake's `pidDir`.
    pub fn pid_dir(&self) -> PathBuf {
        self.path.join("pids")
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.local {
            return;
        }
        let mut users = local_users().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = users.get_mut(&self.path) {
            *n -= 1;
            if *n == 0 {
                users.remove(&self.path);
                let _ = fs::remove_dir_all(&self.path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpacks_once_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let r = Resources::new()
            .file("a.py", "print(1)\n")
            .file("lib/b.txt", b"\xff\x00");
        let first = r.unpack(dir.path()).unwrap();
        assert_eq!(fs::read(first.join("a.py")).unwrap(), b"print(1)\n");
        assert_eq!(fs::read(first.join("lib/b.txt")).unwrap(), b"\xff\x00");
        assert_eq!(r.unpack(dir.path()).unwrap(), first);
        let other = Resources::new().file("a.py", "print(2)\n");
        assert_ne!(other.unpack(dir.path()).unwrap(), first);
        // Racing tasks: all get the same complete directory, no leftovers.
        let r = Resources::new().file("c.py", "x = 1\n");
        let dirs: Vec<PathBuf> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| r.unpack(dir.path()).unwrap()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(dirs.iter().all(|d| d == &dirs[0]));
        let leftovers = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".unpacking")
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    #[should_panic(expected = "must be relative")]
    fn refuses_paths_outside() {
        let _ = Resources::new().file("../x.py", "");
    }

    #[test]
    fn local_work_dir_is_removed_by_its_last_user() {
        let a = WorkDir::acquire(true).unwrap();
        let b = WorkDir::acquire(true).unwrap();
        assert!(a.pid_dir().is_dir());
        drop(a);
        assert!(b.pid_dir().is_dir());
        let path = b.path().to_owned();
        drop(b);
        assert!(!path.exists());
    }
}
