//! # squall-kafka: Kafka spouts and bolts for Squall (Storm's storm-kafka-client)
//!
//! Reads topics into a topology and writes tuples back to Kafka, with Storm's semantics:
//! no message is lost or skipped.
//!
//! | Storm (storm-kafka-client) | Squall |
//! |---|---|
//! | `KafkaSpout`, `KafkaSpoutConfig.builder(..)` | [`KafkaSpout`], [`KafkaSpoutConfig::builder`] |
//! | `FirstPollOffsetStrategy`, `ProcessingGuarantee` | [`FirstPollOffsetStrategy`], [`ProcessingGuarantee`] |
//! | `KafkaSpoutRetryExponentialBackoff` | [`KafkaSpoutRetryExponentialBackoff`] |
//! | `RecordTranslator`, `DefaultRecordTranslator`, `SimpleRecordTranslator` | [`RecordTranslator`], [`DefaultRecordTranslator`], [`SimpleRecordTranslator`] |
//! | `KafkaBolt`, `FieldNameBasedTupleToKafkaMapper` | [`KafkaBolt`], [`FieldNameBasedTupleToKafkaMapper`] |
//! | `DefaultTopicSelector`, `FieldNameTopicSelector` | [`DefaultTopicSelector`], [`FieldNameTopicSelector`] |
//! | `KafkaTridentSpoutOpaque` | [`KafkaTridentSpout`] (wrap it in [`squall_trident::Opaque`]) |
//!
//! ## The spout
//! Partitions of the matching topics are sorted by topic and number and dealt round-robin
//! over the spout's tasks (Storm 2's manual assignment); every
//! [`partition_refresh_period`](KafkaSpoutConfigBuilder::partition_refresh_period) the
//! list is read again, so added partitions (and topics matching a pattern) are picked up.
//! With [`ProcessingGuarantee::AtLeastOnce`] (the default) every record is emitted with
//! the message id `[topic, partition, offset]`; a failed tuple is emitted again after an
//! exponential back-off, and the offset committed for a partition is always the lowest
//! one not yet acked: a crash never skips an un-acked message.
//!
//! ```no_run
//! use squall_api::TopologyBuilder;
//! use squall_kafka::{FirstPollOffsetStrategy, KafkaBolt, KafkaSpout, KafkaSpoutConfig};
//!
//! let spout = KafkaSpout::new(
//!     KafkaSpoutConfig::builder("127.0.0.1:9092", ["sentences"])
//!         .group_id("word-count")
//!         .first_poll_offset_strategy(FirstPollOffsetStrategy::UncommittedEarliest)
//!         .build()?,
//! );
//! let mut builder = TopologyBuilder::new();
//! builder.set_spout("kafka", spout, 2);
//! // ... bolts that read the fields topic, partition, offset, key, value ...
//! builder
//!     .set_bolt("to-kafka", KafkaBolt::new("127.0.0.1:9092").with_topic("copies"), 1)
//!     .shuffle_grouping("kafka");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Metrics
//! The spout sets the gauges `kafka.lag.<topic>.<partition>` (the partition's latest
//! offset, its high watermark, minus the offset committed for it), `kafka.lag.total`
//! (set once the latest offset of every partition of the task is known) and
//! `kafka.retries.exhausted` (messages given up on after
//! [`max_retries`](KafkaSpoutRetryExponentialBackoff::max_retries)); they are shown with
//! the executor stats in the UI and in `/metrics`.
#![deny(missing_docs)]

mod admin;
mod bolt;
mod config;
mod meta;
mod offsets;
mod record;
mod spout;
mod trident;
mod util;

pub use admin::{create_partitions, create_topics, topic_partitions};
pub use bolt::{
    DefaultTopicSelector, FieldNameBasedTupleToKafkaMapper, FieldNameTopicSelector, KafkaBolt,
    TopicSelector, TupleToKafkaMapper,
};
pub use config::{
    FirstPollOffsetStrategy, KafkaSpoutConfig, KafkaSpoutConfigBuilder,
    KafkaSpoutRetryExponentialBackoff, ProcessingGuarantee, Topics,
};
pub use record::{
    DefaultRecordTranslator, KafkaRecord, KafkaTuple, RecordTranslator, SimpleRecordTranslator,
};
pub use spout::KafkaSpout;
pub use trident::KafkaTridentSpout;

/// What can go wrong in this crate: a bad configuration, or Kafka refusing a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is missing or invalid; the message says which and why.
    #[error("invalid Kafka configuration: {0}")]
    Config(String),
    /// A request to Kafka failed.
    #[error("{context}: {source}")]
    Kafka {
        /// What was being done (e.g. "creating topic 'sentences'").
        context: String,
        /// rdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Kafka answered a request with an error for one item of it.
    #[error("{0}")]
    Refused(String),
}

/// This crate's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Error::Kafka {
            context: context.into(),
            source,
        }
    }
}
