//! Rotation of a worker's `worker.log`.
//!
//! The worker writes its stdout and stderr straight into `worker.log`, opened with
//! `O_APPEND`: no pipe through the supervisor, so a worker survives the supervisor's
//! restart. The supervisor checks the size each monitor tick and, past
//! `worker.log.max.bytes`, rotates by copy-truncate: `worker.log.N` is dropped,
//! `worker.log.i` becomes `worker.log.i+1`, `worker.log` is copied to `worker.log.1` and
//! truncated. Writes after the truncation land at the start of the file (`O_APPEND`);
//! lines written between the copy and the truncation are lost (a few lines at most).

use std::path::{Path, PathBuf};

/// One step of a rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogOp {
    /// Delete the file (missing is fine).
    Remove(PathBuf),
    /// Rename the first file to the second (a missing first file is fine).
    Rename(PathBuf, PathBuf),
    /// Copy the first file to the second, then truncate the first.
    CopyTruncate(PathBuf, PathBuf),
}

/// `log.n`.
pub fn numbered(log: &Path, n: u32) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The steps that rotate `log` of `size` bytes, keeping `max_files` rotated files; none
/// while it is smaller than `max_bytes`.
pub fn rotation_plan(log: &Path, size: u64, max_bytes: u64, max_files: u32) -> Vec<LogOp> {
    if size < max_bytes || max_files == 0 {
        return Vec::new();
    }
    let mut ops = vec![LogOp::Remove(numbered(log, max_files))];
    for i in (1..max_files).rev() {
        ops.push(LogOp::Rename(numbered(log, i), numbered(log, i + 1)));
    }
    ops.push(LogOp::CopyTruncate(log.to_owned(), numbered(log, 1)));
    ops
}

/// Rotates `log` when it has reached `max_bytes`; whether it did.
pub fn rotate_if_needed(log: &Path, max_bytes: u64, max_files: u32) -> std::io::Result<bool> {
    let size = match std::fs::metadata(log) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let plan = rotation_plan(log, size, max_bytes, max_files);
    if plan.is_empty() {
        return Ok(false);
    }
    let missing_ok = |r: std::io::Result<()>| match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    };
    for op in plan {
        match op {
            LogOp::Remove(p) => missing_ok(std::fs::remove_file(p))?,
            LogOp::Rename(from, to) => missing_ok(std::fs::rename(from, to))?,
            LogOp::CopyTruncate(from, to) => {
                std::fs::copy(&from, &to)?;
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&from)?
                    .set_len(0)?;
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn plan_shifts_the_numbered_files_and_copy_truncates() {
        let log = Path::new("/l/worker.log");
        assert!(rotation_plan(log, 99, 100, 3).is_empty());
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            rotation_plan(log, 100, 100, 3),
            vec![
                LogOp::Remove(p("/l/worker.log.3")),
                LogOp::Rename(p("/l/worker.log.2"), p("/l/worker.log.3")),
                LogOp::Rename(p("/l/worker.log.1"), p("/l/worker.log.2")),
                LogOp::CopyTruncate(p("/l/worker.log"), p("/l/worker.log.1")),
            ]
        );
        assert_eq!(
            rotation_plan(log, 500, 100, 1),
            vec![
                LogOp::Remove(p("/l/worker.log.1")),
                LogOp::CopyTruncate(p("/l/worker.log"), p("/l/worker.log.1")),
            ]
        );
    }

    #[test]
    fn a_real_log_held_open_in_append_mode_rotates_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("worker.log");
        // The writer keeps its O_APPEND descriptor across rotations, as a worker does.
        let mut w = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        for round in 0..5u8 {
            w.write_all(&[b'a' + round; 60]).unwrap();
            assert!(!rotate_if_needed(&log, 100, 2).unwrap());
            w.write_all(&[b'a' + round; 60]).unwrap();
            assert!(rotate_if_needed(&log, 100, 2).unwrap());
            assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        }
        // Writes after a truncation start at offset 0, not after a hole.
        w.write_all(b"tail").unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"tail");
        assert_eq!(std::fs::read(numbered(&log, 1)).unwrap(), [b'e'; 120]);
        assert_eq!(std::fs::read(numbered(&log, 2)).unwrap(), [b'd'; 120]);
        assert!(!numbered(&log, 3).exists());
        assert!(!rotate_if_needed(&dir.path().join("missing.log"), 1, 2).unwrap());
    }
}
