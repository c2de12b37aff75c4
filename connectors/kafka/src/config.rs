//! `KafkaSpoutConfig`: what a Kafka spout reads and how (Storm's `KafkaSpoutConfig`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::record::{DefaultRecordTranslator, RecordTranslator};
use crate::{Error, Result};

/// Where a partition's first poll starts (Storm's `FirstPollOffsetStrategy`).
///
/// "First" means the first time this topology reads the partition: offsets this
/// topology committed (a worker restarted, a partition moved to another task) are
/// always resumed from, whatever the strategy. The topology's id is stored as the
/// commit's metadata (`{"topologyId": ...}`), as Storm does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FirstPollOffsetStrategy {
    /// Start at the partition's first offset, ignoring offsets committed by an earlier
    /// deployment (Storm's `EARLIEST`).
    Earliest,
    /// Start at the partition's end, ignoring offsets committed by an earlier deployment
    /// (Storm's `LATEST`).
    Latest,
    /// Resume from the group's committed offset; without one, start at the first offset
    /// (Storm's `UNCOMMITTED_EARLIEST`, the default).
    #[default]
    UncommittedEarliest,
    /// Resume from the group's committed offset; without one, start at the end (Storm's
    /// `UNCOMMITTED_LATEST`).
    UncommittedLatest,
}

impl FirstPollOffsetStrategy {
    /// Whether a partition with no committed offset starts at its first offset (rather
    /// than at its end).
    pub fn from_beginning(self) -> bool {
        matches!(self, Self::Earliest | Self::UncommittedEarliest)
    }

    /// Whether a committed offset is resumed from only when this topology committed it.
    pub fn ignores_earlier_commits(self) -> bool {
        matches!(self, Self::Earliest | Self::Latest)
    }
}

impl std::str::FromStr for FirstPollOffsetStrategy {
    type Err = Error;

    /// Parses Storm's names (`EARLIEST`, `LATEST`, `UNCOMMITTED_EARLIEST`,
    /// `UNCOMMITTED_LATEST`), in any case.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "EARLIEST" => Ok(Self::Earliest),
            "LATEST" => Ok(Self::Latest),
            "UNCOMMITTED_EARLIEST" => Ok(Self::UncommittedEarliest),
            "UNCOMMITTED_LATEST" => Ok(Self::UncommittedLatest),
            _ => Err(Error::Config(format!(
                "unknown first poll offset strategy '{s}': expected EARLIEST, LATEST, \
                 UNCOMMITTED_EARLIEST or UNCOMMITTED_LATEST"
            ))),
        }
    }
}

/// What the spout promises about each record (Storm's `ProcessingGuarantee`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProcessingGuarantee {
    /// Every record is processed at least once: tuples are tracked, failed ones are
    /// retried, and only offsets whose records (and all earlier ones) were acked are
    /// committed (Storm's `AT_LEAST_ONCE`, the default).
    #[default]
    AtLeastOnce,
    /// Every record is emitted at most once: the offsets of polled records are committed
    /// (synchronously) before they are emitted; nothing is retried (Storm's
    /// `AT_MOST_ONCE`).
    AtMostOnce,
    /// Tuples are not tracked; the offsets polled are committed every
    /// [`offset_commit_period`](KafkaSpoutConfigBuilder::offset_commit_period) whatever
    /// became of them (Storm's `NO_GUARANTEE`).
    NoGuarantee,
}

impl std::str::FromStr for ProcessingGuarantee {
    type Err = Error;

    /// Parses Storm's names (`AT_LEAST_ONCE`, `AT_MOST_ONCE`, `NO_GUARANTEE`), in any
    /// case.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "AT_LEAST_ONCE" => Ok(Self::AtLeastOnce),
            "AT_MOST_ONCE" => Ok(Self::AtMostOnce),
            "NO_GUARANTEE" => Ok(Self::NoGuarantee),
            _ => Err(Error::Config(format!(
                "unknown processing guarantee '{s}': expected AT_LEAST_ONCE, AT_MOST_ONCE \
                 or NO_GUARANTEE"
            ))),
        }
    }
}

/// When a failed tuple is emitted again (Storm's `KafkaSpoutRetryExponentialBackoff`):
/// the first retry after `initial_delay`, the `n`-th after `delay_period * 2^(n-1)`,
/// never later than `max_delay`; a message that failed more than `max_retries` times is
/// reported (an error naming its topic, partition and offset, and the gauge
/// `kafka.retries.exhausted`) and then treated as done, as Storm does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KafkaSpoutRetryExponentialBackoff {
    initial_delay: Duration,
    delay_period: Duration,
    max_retries: Option<u32>,
    max_delay: Duration,
}

impl Default for KafkaSpoutRetryExponentialBackoff {
    /// Storm's defaults: first retry at once, then 2 ms doubling, at most 10 s apart,
    /// retried forever.
    fn default() -> Self {
        KafkaSpoutRetryExponentialBackoff {
            initial_delay: Duration::ZERO,
            delay_period: Duration::from_millis(2),
            max_retries: None,
            max_delay: Duration::from_secs(10),
        }
    }
}

impl KafkaSpoutRetryExponentialBackoff {
    /// A back-off: `max_retries` `None` retries forever.
    pub fn new(
        initial_delay: Duration,
        delay_period: Duration,
        max_retries: Option<u32>,
        max_delay: Duration,
    ) -> Self {
        KafkaSpoutRetryExponentialBackoff {
            initial_delay,
            delay_period,
            max_retries,
            max_delay,
        }
    }

    /// How many times a message may be retried (`None`: forever).
    pub fn max_retries(&self) -> Option<u32> {
        self.max_retries
    }

    /// The delay before the retry that follows failure number `fails` (1 for the first
    /// failure), or `None` when the message has failed too often.
    pub fn delay(&self, fails: u32) -> Option<Duration> {
        if self.max_retries.is_some_and(|max| fails > max) {
            return None;
        }
        let delay = if fails <= 1 {
            self.initial_delay
        } else {
            let factor = 1u32.checked_shl(fails - 1).unwrap_or(u32::MAX);
            self.delay_period.saturating_mul(factor)
        };
        Some(delay.min(self.max_delay))
    }
}

/// The topics a spout reads: a list of names, or every topic whose whole name matches
/// a regular expression (Storm's `NamedTopicFilter` / `PatternTopicFilter`).
#[derive(Clone, Debug)]
pub enum Topics {
    /// These topics.
    Names(Vec<String>),
    /// Every topic whose whole name matches (the expression is anchored: `^(?:...)$`;
    /// topics starting with `__`, Kafka's own, are never matched).
    Pattern(regex::Regex),
}

impl Topics {
    /// Whether topic `name` is read.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Topics::Names(names) => names.iter().any(|n| n == name),
            Topics::Pattern(re) => !name.starts_with("__") && re.is_match(name),
        }
    }
}

impl fmt::Display for Topics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topics::Names(names) => write!(f, "{}", names.join(",")),
            Topics::Pattern(re) => write!(f, "/{}/", re.as_str()),
        }
    }
}

/// A Kafka spout's configuration (Storm's `KafkaSpoutConfig`), made by
/// [`KafkaSpoutConfig::builder`].
#[derive(Clone)]
pub struct KafkaSpoutConfig {
    pub(crate) bootstrap_servers: String,
    pub(crate) topics: Topics,
    pub(crate) group_id: String,
    pub(crate) props: Vec<(String, String)>,
    pub(crate) first_poll: FirstPollOffsetStrategy,
    pub(crate) guarantee: ProcessingGuarantee,
    pub(crate) commit_period: Duration,
    pub(crate) max_uncommitted: usize,
    pub(crate) translator: Arc<dyn RecordTranslator>,
    pub(crate) retry: KafkaSpoutRetryExponentialBackoff,
    pub(crate) refresh_period: Duration,
    pub(crate) tracking_enforced: bool,
    pub(crate) max_poll_records: usize,
    pub(crate) poll_timeout: Duration,
}

impl fmt::Debug for KafkaSpoutConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSpoutConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topics", &self.topics.to_string())
            .field("group_id", &self.group_id)
            .field("props", &self.props)
            .field("first_poll", &self.first_poll)
            .field("guarantee", &self.guarantee)
            .field("commit_period", &self.commit_period)
            .field("max_uncommitted", &self.max_uncommitted)
            .field("retry", &self.retry)
            .field("refresh_period", &self.refresh_period)
            .finish_non_exhaustive()
    }
}

impl KafkaSpoutConfig {
    /// Starts a configuration reading `topics` from the brokers `bootstrap_servers`
    /// (`host:port[,host:port...]`), as Storm's `KafkaSpoutConfig.builder(servers,
    /// topics...)`.
    pub fn builder<I, S>(bootstrap_servers: impl Into<String>, topics: I) -> KafkaSpoutConfigBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        KafkaSpoutConfigBuilder::new(
            bootstrap_servers.into(),
            TopicsSpec::Names(topics.into_iter().map(Into::into).collect()),
        )
    }

    /// Starts a configuration reading every topic whose whole name matches the regular
    /// expression `pattern` (Storm's `builder(servers, Pattern)`); a bad expression is
    /// refused by [`build`](KafkaSpoutConfigBuilder::build).
    pub fn builder_with_pattern(
        bootstrap_servers: impl Into<String>,
        pattern: impl Into<String>,
    ) -> KafkaSpoutConfigBuilder {
        KafkaSpoutConfigBuilder::new(
            bootstrap_servers.into(),
            TopicsSpec::Pattern(pattern.into()),
        )
    }

    /// The brokers.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// The topics read.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// The consumer group the offsets are committed for.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// The first poll offset strategy.
    pub fn first_poll_offset_strategy(&self) -> FirstPollOffsetStrategy {
        self.first_poll
    }

    /// The processing guarantee.
    pub fn processing_guarantee(&self) -> ProcessingGuarantee {
        self.guarantee
    }

    /// The record translator.
    pub fn record_translator(&self) -> &Arc<dyn RecordTranslator> {
        &self.translator
    }

    /// The consumer properties given to librdkafka (Kafka's consumer property names:
    /// `bootstrap.servers`, `group.id`, ... and whatever
    /// [`set_prop`](KafkaSpoutConfigBuilder::set_prop) added).
    pub fn consumer_props(&self) -> Vec<(String, String)> {
        let mut props = vec![
            (
                "bootstrap.servers".to_owned(),
                self.bootstrap_servers.clone(),
            ),
            ("group.id".to_owned(), self.group_id.clone()),
            ("enable.auto.commit".to_owned(), "false".to_owned()),
            ("enable.auto.offset.store".to_owned(), "false".to_owned()),
            (
                "auto.offset.reset".to_owned(),
                if self.first_poll.from_beginning() {
                    "earliest"
                } else {
                    "latest"
                }
                .to_owned(),
            ),
        ];
        for (k, v) in &self.props {
            match props.iter_mut().find(|(pk, _)| pk == k) {
                Some(p) => p.1 = v.clone(),
                None => props.push((k.clone(), v.clone())),
            }
        }
        props
    }

    pub(crate) fn client_config(&self) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        for (k, v) in self.consumer_props() {
            c.set(k, v);
        }
        c
    }
}

#[derive(Clone, Debug)]
enum TopicsSpec {
    Names(Vec<String>),
    Pattern(String),
}

/// Builds a [`KafkaSpoutConfig`]; setters are Storm's, in snake case.
#[derive(Clone)]
pub struct KafkaSpoutConfigBuilder {
    bootstrap_servers: String,
    topics: TopicsSpec,
    group_id: Option<String>,
    props: Vec<(String, String)>,
    first_poll: FirstPollOffsetStrategy,
    guarantee: ProcessingGuarantee,
    commit_period: Duration,
    max_uncommitted: usize,
    translator: Arc<dyn RecordTranslator>,
    retry: KafkaSpoutRetryExponentialBackoff,
    refresh_period: Duration,
    tracking_enforced: bool,
    max_poll_records: usize,
    poll_timeout: Duration,
}

impl KafkaSpoutConfigBuilder {
    fn new(bootstrap_servers: String, topics: TopicsSpec) -> Self {
        KafkaSpoutConfigBuilder {
            bootstrap_servers,
            topics,
            group_id: None,
            props: Vec::new(),
            first_poll: FirstPollOffsetStrategy::default(),
            guarantee: ProcessingGuarantee::default(),
            commit_period: Duration::from_secs(30),
            max_uncommitted: 10_000_000,
            translator: Arc::new(DefaultRecordTranslator),
            retry: KafkaSpoutRetryExponentialBackoff::default(),
            refresh_period: Duration::from_secs(2),
            tracking_enforced: false,
            max_poll_records: 500,
            poll_timeout: Duration::from_millis(200),
        }
    }

    /// The consumer group whose committed offsets the spout reads and writes (Kafka's
    /// `group.id`; required).
    pub fn group_id(mut self, group_id: impl Into<String>) -> Self {
        self.group_id = Some(group_id.into());
        self
    }

    /// Passes a consumer property to librdkafka as is (Storm's `setProp`), e.g.
    /// `fetch.min.bytes` or `security.protocol`. `group.id` sets the group as
    /// [`group_id`](Self::group_id) does; `enable.auto.commit=true` is refused (the
    /// processing guarantee decides what is committed).
    pub fn set_prop(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        if key == "group.id" {
            self.group_id = Some(value);
        } else if key == "bootstrap.servers" {
            self.bootstrap_servers = value;
        } else {
            self.props.push((key, value));
        }
        self
    }

    /// Where the first poll of a partition starts (default
    /// [`FirstPollOffsetStrategy::UncommittedEarliest`]).
    pub fn first_poll_offset_strategy(mut self, strategy: FirstPollOffsetStrategy) -> Self {
        self.first_poll = strategy;
        self
    }

    /// What the spout promises (default [`ProcessingGuarantee::AtLeastOnce`]).
    pub fn processing_guarantee(mut self, guarantee: ProcessingGuarantee) -> Self {
        self.guarantee = guarantee;
        self
    }

    /// How often offsets are committed (Storm's `offset.commit.period.ms`; default 30 s).
    /// Offsets are also committed when the spout is deactivated or closed.
    pub fn offset_commit_period(mut self, period: Duration) -> Self {
        self.commit_period = period;
        self
    }

    /// Stops polling a partition while this many of its offsets are past its first
    /// un-acked one (Storm's `maxUncommittedOffsets`; default 10,000,000).
    pub fn max_uncommitted_offsets(mut self, n: usize) -> Self {
        self.max_uncommitted = n;
        self
    }

    /// How records become tuples (default [`DefaultRecordTranslator`]: fields `topic,
    /// partition, offset, key, value` on the default stream).
    pub fn record_translator(mut self, translator: impl RecordTranslator) -> Self {
        self.translator = Arc::new(translator);
        self
    }

    /// When failed tuples are retried (Storm's `setRetry`).
    pub fn retry(mut self, retry: KafkaSpoutRetryExponentialBackoff) -> Self {
        self.retry = retry;
        self
    }

    /// How often the topics' partitions are listed again, so added partitions are read
    /// (Storm's `setPartitionRefreshPeriodMs`; default 2 s).
    pub fn partition_refresh_period(mut self, period: Duration) -> Self {
        self.refresh_period = period;
        self
    }

    /// With [`ProcessingGuarantee::AtMostOnce`] or [`ProcessingGuarantee::NoGuarantee`],
    /// still emit tuples with message ids, so their completion shows in the stats
    /// (Storm's `setTupleTrackingEnforced`); they are never retried.
    pub fn tuple_tracking_enforced(mut self, enforced: bool) -> Self {
        self.tracking_enforced = enforced;
        self
    }

    /// At most this many records are read from the consumer at a time (Kafka's
    /// `max.poll.records`; default 500).
    pub fn max_poll_records(mut self, n: usize) -> Self {
        self.max_poll_records = n;
        self
    }

    /// How long the Trident spout waits for a batch's first record (Storm's
    /// `setPollTimeoutMs`; default 200 ms).
    pub fn poll_timeout(mut self, timeout: Duration) -> Self {
        self.poll_timeout = timeout;
        self
    }

    /// Checks the configuration and builds it.
    pub fn build(self) -> Result<KafkaSpoutConfig> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(Error::Config(
                "no bootstrap servers: give host:port[,host:port...]".into(),
            ));
        }
        let topics = match self.topics {
            TopicsSpec::Names(names) => {
                if names.is_empty() {
                    return Err(Error::Config("no topics given".into()));
                }
                if let Some(bad) = names.iter().find(|n| !valid_topic_name(n)) {
                    return Err(Error::Config(format!(
                        "'{bad}' is not a Kafka topic name (1 to 249 of ASCII letters, \
                         digits, '.', '_' and '-')"
                    )));
                }
                Topics::Names(names)
            }
            TopicsSpec::Pattern(p) => {
                Topics::Pattern(regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                    Error::Config(format!(
                        "topic pattern '{p}' is not a regular expression: {e}"
                    ))
                })?)
            }
        };
        let group_id = match self.group_id {
            Some(g) if !g.trim().is_empty() => g,
            _ => {
                return Err(Error::Config(
                    "no consumer group: set group_id(..) (Kafka's group.id)".into(),
                ))
            }
        };
        for (k, v) in &self.props {
            if k == "enable.auto.commit" && v.eq_ignore_ascii_case("true") {
                return Err(Error::Config(
                    "enable.auto.commit=true is not allowed: the processing guarantee \
                     decides what is committed (see processing_guarantee)"
                        .into(),
                ));
            }
        }
        if self.commit_period.is_zero() {
            return Err(Error::Config(
                "offset_commit_period must be more than 0".into(),
            ));
        }
        if self.refresh_period.is_zero() {
            return Err(Error::Config(
                "partition_refresh_period must be more than 0".into(),
            ));
        }
        if self.max_uncommitted == 0 {
            return Err(Error::Config(
                "max_uncommitted_offsets must be at least 1".into(),
            ));
        }
        if self.max_poll_records == 0 {
            return Err(Error::Config("max_poll_records must be at least 1".into()));
        }
        let streams = self.translator.streams();
        if streams.is_empty() {
            return Err(Error::Config(
                "the record translator declares no stream".into(),
            ));
        }
        Ok(KafkaSpoutConfig {
            bootstrap_servers: self.bootstrap_servers,
            topics,
            group_id,
            props: self.props,
            first_poll: self.first_poll,
            guarantee: self.guarantee,
            commit_period: self.commit_period,
            max_uncommitted: self.max_uncommitted,
            translator: self.translator,
            retry: self.retry,
            refresh_period: self.refresh_period,
            tracking_enforced: self.tracking_enforced,
            max_poll_records: self.max_poll_records,
            poll_timeout: self.poll_timeout,
        })
    }
}

/// Kafka's rule for topic names.
pub(crate) fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storm_names_parse() {
        assert_eq!(
            "uncommitted_earliest"
                .parse::<FirstPollOffsetStrategy>()
                .unwrap(),
            FirstPollOffsetStrategy::UncommittedEarliest
        );
        assert_eq!(
            "LATEST".parse::<FirstPollOffsetStrategy>().unwrap(),
            FirstPollOffsetStrategy::Latest
        );
        assert_eq!(
            "AT_MOST_ONCE".parse::<ProcessingGuarantee>().unwrap(),
            ProcessingGuarantee::AtMostOnce
        );
        let e = "newest".parse::<FirstPollOffsetStrategy>().unwrap_err();
        assert!(e.to_string().contains("'newest'"), "{e}");
    }

    #[test]
    fn backoff_follows_storms_formula() {
        let b = KafkaSpoutRetryExponentialBackoff::new(
            Duration::from_millis(5),
            Duration::from_millis(10),
            Some(4),
            Duration::from_millis(50),
        );
        assert_eq!(b.delay(1), Some(Duration::from_millis(5)));
        assert_eq!(b.delay(2), Some(Duration::from_millis(20)));
        assert_eq!(b.delay(3), Some(Duration::from_millis(40)));
        assert_eq!(b.delay(4), Some(Duration::from_millis(50)));
        assert_eq!(b.delay(5), None);
        let d = KafkaSpoutRetryExponentialBackoff::default();
        assert_eq!(d.max_retries(), None);
        assert_eq!(d.delay(1_000_000), Some(Duration::from_secs(10)));
        assert_eq!(d.delay(1), Some(Duration::ZERO));
    }

    #[test]
    fn bad_configurations_are_refused_naming_the_problem() {
        let err = |b: KafkaSpoutConfigBuilder| b.build().unwrap_err().to_string();
        assert!(err(KafkaSpoutConfig::builder("h:1", ["t"])).contains("group_id"));
        assert!(err(KafkaSpoutConfig::builder("", ["t"]).group_id("g")).contains("bootstrap"));
        assert!(
            err(KafkaSpoutConfig::builder("h:1", Vec::<String>::new()).group_id("g"))
                .contains("no topics")
        );
        assert!(err(KafkaSpoutConfig::builder("h:1", ["a b"]).group_id("g"))
            .contains("'a b' is not a Kafka topic name"));
        assert!(
            err(KafkaSpoutConfig::builder_with_pattern("h:1", "(").group_id("g"))
                .contains("topic pattern '('")
        );
        assert!(err(KafkaSpoutConfig::builder("h:1", ["t"])
            .group_id("g")
            .set_prop("enable.auto.commit", "true"))
        .contains("enable.auto.commit"));
        assert!(err(KafkaSpoutConfig::builder("h:1", ["t"])
            .group_id("g")
            .max_uncommitted_offsets(0))
        .contains("max_uncommitted_offsets"));
    }

    #[test]
    fn props_pass_through_and_override_the_defaults() {
        let c = KafkaSpoutConfig::builder("h:1", ["t"])
            .set_prop("group.id", "g")
            .set_prop("auto.offset.reset", "latest")
            .set_prop("fetch.min.bytes", "10")
            .build()
            .unwrap();
        let props = c.consumer_props();
        let get = |k: &str| {
            props
                .iter()
                .find(|(pk, _)| pk == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("group.id"), Some("g"));
        assert_eq!(get("auto.offset.reset"), Some("latest"));
        assert_eq!(get("fetch.min.bytes"), Some("10"));
        assert_eq!(get("enable.auto.commit"), Some("false"));
    }

    #[test]
    fn patterns_match_whole_names_only() {
        let t = Topics::Pattern(regex::Regex::new("^(?:orders-[0-9]+|o)$").unwrap());
        assert!(t.matches("orders-12"));
        assert!(!t.matches("orders-12-dlq"));
        assert!(!t.matches("old-orders-1"));
        let all = Topics::Pattern(regex::Regex::new(".*").unwrap());
        assert!(!all.matches("__consumer_offsets"));
    }
}
