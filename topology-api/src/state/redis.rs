//! The Redis provider (Storm's `RedisKeyValueStateProvider`), behind the `redis`
//! feature.
//!
//! Namespace `ns` uses three hashes:
//!
//! | key | holds |
//! |---|---|
//! | `ns` | the committed state: field = key as JSON, value = value as JSON |
//! | `ns$prepare` | the prepared writes (an empty value deletes the field) |
//! | `ns$txid` | `committed`: the last committed txid; `prepared`: the prepared one |
//!
//! Prepare, commit and rollback are each one `MULTI`/`EXEC` transaction, so a crash or
//! a lost connection leaves either the whole step or none of it. One synchronous
//! connection per state; after an error it is dropped and the next call opens a new
//! one (as Trident's Redis state does).

use std::collections::BTreeMap;

use super::provider::{Entries, RedisConfig, Store, Writes};
use super::StateError;

pub(crate) struct RedisStore {
    client: ::redis::Client,
    conn: Option<::redis::Connection>,
    /// The URL without its password, for messages.
    shown: String,
    timeout: std::time::Duration,
    key: String,
    prepare_key: String,
    txid_key: String,
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

impl RedisStore {
    pub(crate) fn connect(c: &RedisConfig, namespace: &str) -> Result<Self, StateError> {
        let shown = redact(&c.url);
        let client = ::redis::Client::open(c.url.as_str())
            .map_err(|e| StateError::new(format!("invalid Redis URL {shown}: {e}")))?;
        let mut store = RedisStore {
            client,
            conn: None,
            shown,
            timeout: c.timeout,
            key: namespace.to_owned(),
            prepare_key: format!("{namespace}$prepare"),
            txid_key: format!("{namespace}$txid"),
        };
        store.connection()?;
        Ok(store)
    }

    fn connection(&mut self) -> Result<&mut ::redis::Connection, StateError> {
        if self.conn.is_none() {
            let conn = self
                .client
                .get_connection_with_timeout(self.timeout)
                .and_then(|c| {
                    c.set_read_timeout(Some(self.timeout))?;
                    c.set_write_timeout(Some(self.timeout))?;
                    Ok(c)
                })
                .map_err(|e| {
                    StateError::new(format!("cannot connect to Redis at {}: {e}", self.shown))
                })?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected just above"))
    }

    /// Runs `f` on the connection; an error drops it (it may be out of step).
    fn run<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut ::redis::Connection) -> ::redis::RedisResult<T>,
    ) -> Result<T, StateError> {
        let result = f(self.connection()?);
        result.map_err(|e| {
            self.conn = None;
            StateError::new(format!(
                "Redis at {}: {what} of state '{}' failed: {e}",
                self.shown, self.key
            ))
        })
    }

    fn add_writes(pipe: &mut ::redis::Pipeline, key: &str, writes: &Writes) {
        let puts: Vec<(&[u8], &[u8])> = writes
            .iter()
            .filter_map(|(k, v)| v.as_deref().map(|v| (k.as_slice(), v)))
            .collect();
        let dels: Vec<&[u8]> = writes
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.as_slice())
            .collect();
        if !puts.is_empty() {
            pipe.cmd("HSET").arg(key).arg(puts).ignore();
        }
        if !dels.is_empty() {
            pipe.cmd("HDEL").arg(key).arg(dels).ignore();
        }
    }
}

impl Store for RedisStore {
    fn load(&mut self) -> Result<Entries, StateError> {
        let key = self.key.clone();
        let all: BTreeMap<Vec<u8>, Vec<u8>> =
            self.run("loading", |c| ::redis::cmd("HGETALL").arg(&key).query(c))?;
        Ok(all.into_iter().collect())
    }

    fn prepare(&mut self, txid: u64, writes: &Writes) -> Result<(), StateError> {
        let mut pipe = ::redis::pipe();
        pipe.atomic().cmd("DEL").arg(&self.prepare_key).ignore();
        // A deletion is prepared as an empty value (JSON is never empty).
        let staged: Writes = writes
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone().unwrap_or_default())))
            .collect();
        Self::add_writes(&mut pipe, &self.prepare_key, &staged);
        pipe.cmd("HSET")
            .arg(&self.txid_key)
            .arg("prepared")
            .arg(txid)
            .ignore();
        self.run(&format!("prepare of txid {txid}"), |c| pipe.query::<()>(c))
    }

    fn commit(&mut self, txid: u64) -> Result<bool, StateError> {
        let (_, prepared) = self.txids()?;
        if prepared != Some(txid) {
            return Ok(false);
        }
        let prepare_key = self.prepare_key.clone();
        let staged: BTreeMap<Vec<u8>, Vec<u8>> = self.run("reading prepared writes", |c| {
            ::redis::cmd("HGETALL").arg(&prepare_key).query(c)
        })?;
        let writes: Writes = staged
            .into_iter()
            .map(|(k, v)| (k, (!v.is_empty()).then_some(v)))
            .collect();
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        Self::add_writes(&mut pipe, &self.key, &writes);
        pipe.cmd("DEL").arg(&self.prepare_key).ignore();
        pipe.cmd("HSET")
            .arg(&self.txid_key)
            .arg("committed")
            .arg(txid)
            .ignore();
        pipe.cmd("HDEL")
            .arg(&self.txid_key)
            .arg("prepared")
            .ignore();
        self.run(&format!("commit of txid {txid}"), |c| pipe.query::<()>(c))?;
        Ok(true)
    }

    fn rollback(&mut self) -> Result<(), StateError> {
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(&self.prepare_key)
            .ignore()
            .cmd("HDEL")
            .arg(&self.txid_key)
            .arg("prepared")
            .ignore();
        self.run("rollback", |c| pipe.query::<()>(c))
    }

    fn write_now(&mut self, writes: &Writes) -> Result<(), StateError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        Self::add_writes(&mut pipe, &self.key, writes);
        self.run("write", |c| pipe.query::<()>(c))
    }

    fn txids(&mut self) -> Result<(Option<u64>, Option<u64>), StateError> {
        let key = self.txid_key.clone();
        let ids: Vec<Option<u64>> = self.run("reading txids", |c| {
            ::redis::cmd("HMGET")
                .arg(&key)
                .arg("committed")
                .arg("prepared")
                .query(c)
        })?;
        Ok((
            ids.first().copied().flatten(),
            ids.get(1).copied().flatten(),
        ))
    }
}
