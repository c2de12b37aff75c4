//! Creating topics and partitions (rdkafka's `AdminClient`, used by the examples and
//! tests; a topology needs none of it).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::config::valid_topic_name;
use crate::util::block_on;
use crate::{Error, Result};

fn admin(bootstrap_servers: &str) -> Result<AdminClient<DefaultClientContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .create()
        .map_err(|e| Error::kafka(format!("connecting to {bootstrap_servers}"), e))
}

fn options(timeout: Duration) -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout))
}

/// Creates each `(topic, partitions)` that does not exist yet (replication factor 1),
/// and returns the topics it created; topics that exist already are left as they are.
pub fn create_topics(
    bootstrap_servers: &str,
    topics: &[(&str, i32)],
    timeout: Duration,
) -> Result<Vec<String>> {
    for (name, partitions) in topics {
        if !valid_topic_name(name) {
            return Err(Error::Config(format!("'{name}' is not a Kafka topic name")));
        }
        if *partitions < 1 {
            return Err(Error::Config(format!(
                "topic '{name}' needs at least 1 partition, not {partitions}"
            )));
        }
    }
    let admin = admin(bootstrap_servers)?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, p)| NewTopic::new(name, *p, TopicReplication::Fixed(1)))
        .collect();
    let results = block_on(admin.create_topics(&new, &options(timeout)))
        .map_err(|e| Error::kafka(format!("creating topics on {bootstrap_servers}"), e))?;
    let mut created = Vec::new();
    for r in results {
        match r {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(Error::Refused(format!(
                    "creating topic '{name}' on {bootstrap_servers}: {code}"
                )))
            }
        }
    }
    Ok(created)
}

/// Grows `topic` to `total` partitions (Kafka's `CreatePartitions`).
pub fn create_partitions(
    bootstrap_servers: &str,
    topic: &str,
    total: usize,
    timeout: Duration,
) -> Result<()> {
    let admin = admin(bootstrap_servers)?;
    let new = [NewPartitions::new(topic, total)];
    let results = block_on(admin.create_partitions(&new, &options(timeout))).map_err(|e| {
        Error::kafka(
            format!("adding partitions to '{topic}' on {bootstrap_servers}"),
            e,
        )
    })?;
    for r in results {
        if let Err((name, code)) = r {
            return Err(Error::Refused(format!(
                "growing topic '{name}' to {total} partitions on {bootstrap_servers}: {code}"
            )));
        }
    }
    Ok(())
}

/// How many partitions `topic` has, or `None` when it does not exist.
pub fn topic_partitions(
    bootstrap_servers: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Option<usize>> {
    let admin = admin(bootstrap_servers)?;
    let md = admin
        .inner()
        .fetch_metadata(None, timeout)
        .map_err(|e| Error::kafka(format!("reading metadata from {bootstrap_servers}"), e))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len()))
}
