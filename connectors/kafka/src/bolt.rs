//! `KafkaBolt`: writes tuples to Kafka (Storm's `KafkaBolt`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientConfig;
use squall_api::{
    Bolt, BoxError, Config, OutputCollector, OutputFieldsDeclarer, TopologyContext, Tuple, Value,
};

/// Picks the topic a tuple is written to (Storm's `KafkaTopicSelector`); `None` skips the
/// tuple (it is acked and nothing is written, as in Storm).
pub trait TopicSelector: Send + Sync + 'static {
    /// The topic for `tuple`.
    fn topic(&self, tuple: &Tuple) -> Option<String>;
}

/// Every tuple goes to one topic (Storm's `DefaultTopicSelector`).
#[derive(Clone, Debug)]
pub struct DefaultTopicSelector(pub String);

impl DefaultTopicSelector {
    /// Writes to `topic`.
    pub fn new(topic: impl Into<String>) -> Self {
        DefaultTopicSelector(topic.into())
    }
}

impl TopicSelector for DefaultTopicSelector {
    fn topic(&self, _tuple: &Tuple) -> Option<String> {
        Some(self.0.clone())
    }
}

/// The topic is the tuple's field `field` (a string), or `default_topic` when the tuple
/// has no such field or it is null (Storm's `FieldNameTopicSelector`).
#[derive(Clone, Debug)]
pub struct FieldNameTopicSelector {
    field: String,
    default_topic: String,
}

impl FieldNameTopicSelector {
    /// The topic from field `field`, else `default_topic`.
    pub fn new(field: impl Into<String>, default_topic: impl Into<String>) -> Self {
        FieldNameTopicSelector {
            field: field.into(),
            default_topic: default_topic.into(),
        }
    }
}

impl TopicSelector for FieldNameTopicSelector {
    fn topic(&self, tuple: &Tuple) -> Option<String> {
        match tuple.get_value_by_field(&self.field) {
            Ok(Value::Str(s)) => Some(s.to_string()),
            _ => Some(self.default_topic.clone()),
        }
    }
}

/// Makes a record's key and value from a tuple (Storm's `TupleToKafkaMapper`). An
/// error fails the tuple and is reported.
pub trait TupleToKafkaMapper: Send + Sync + 'static {
    /// The record's key (`None`: no key).
    fn key(&self, tuple: &Tuple) -> Result<Option<Vec<u8>>, BoxError>;
    /// The record's value (`None`: a tombstone).
    fn message(&self, tuple: &Tuple) -> Result<Option<Vec<u8>>, BoxError>;
}

/// Key and value from two fields, `key` and `message` by default (Storm's
/// `FieldNameBasedTupleToKafkaMapper`). A missing key field means no key; a missing
/// message field is an error. Strings and bytes are written as they are, numbers and
/// booleans as text, lists and maps as JSON, null as nothing.
#[derive(Clone, Debug)]
pub struct FieldNameBasedTupleToKafkaMapper {
    key_field: String,
    message_field: String,
}

impl Default for FieldNameBasedTupleToKafkaMapper {
    fn default() -> Self {
        Self::new("key", "message")
    }
}

impl FieldNameBasedTupleToKafkaMapper {
    /// Key from `key_field`, value from `message_field`.
    pub fn new(key_field: impl Into<String>, message_field: impl Into<String>) -> Self {
        FieldNameBasedTupleToKafkaMapper {
            key_field: key_field.into(),
            message_field: message_field.into(),
        }
    }
}

/// A value as record bytes.
fn value_bytes(v: &Value) -> Result<Option<Vec<u8>>, BoxError> {
    Ok(match v {
        Value::Null => None,
        Value::Str(s) => Some(s.as_bytes().to_vec()),
        Value::Bytes(b) => Some(b.clone()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        Value::Float(f) => Some(f.to_string().into_bytes()),
        Value::Bool(b) => Some(b.to_string().into_bytes()),
        Value::List(_) | Value::Map(_) => Some(serde_json::to_vec(v)?),
    })
}

impl TupleToKafkaMapper for FieldNameBasedTupleToKafkaMapper {
    fn key(&self, tuple: &Tuple) -> Result<Option<Vec<u8>>, BoxError> {
        if !tuple.contains(&self.key_field) {
            return Ok(None);
        }
        value_bytes(tuple.get_value_by_field(&self.key_field)?)
    }

    fn message(&self, tuple: &Tuple) -> Result<Option<Vec<u8>>, BoxError> {
        value_bytes(tuple.get_value_by_field(&self.message_field)?)
    }
}

/// Delivery reports, handed from librdkafka's callback to the bolt's thread.
#[derive(Default)]
struct Deliveries(Mutex<Vec<(usize, Result<(), String>)>>);

struct BoltContext(Arc<Deliveries>);

impl ClientContext for BoltContext {}

impl ProducerContext for BoltContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, id: usize) {
        let r = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.to_string()),
        };
        self.0.lock().push((id, r));
    }
}

impl Deliveries {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(usize, Result<(), String>)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How often an idle bolt looks at its delivery reports (a tick tuple).
const TICK_SECS: u32 = 1;
/// How long `send` may wait for room in librdkafka's queue before the tuple fails.
const QUEUE_FULL_WAIT: Duration = Duration::from_secs(5);
/// How long `cleanup` waits for records still in flight.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// A bolt writing each tuple to Kafka (Storm's `KafkaBolt`).
///
/// The tuple becomes a record through a [`TupleToKafkaMapper`] (default: fields `key`
/// and `message`) and goes to the topic a [`TopicSelector`] picks. The input is acked
/// only once the broker confirmed the record (Kafka's delivery report), and failed (so
/// the spout replays it) when delivery failed; with
/// [`fire_and_forget`](Self::fire_and_forget) it is acked as soon as the record is
/// handed to the producer. Delivery reports are taken on the bolt's own thread, when a
/// tuple arrives and on a tick tuple every second, so an idle bolt still acks.
///
/// ```no_run
/// use squall_kafka::{FieldNameBasedTupleToKafkaMapper, KafkaBolt};
/// let bolt = KafkaBolt::new("127.0.0.1:9092")
///     .with_topic("word-counts")
///     .with_tuple_to_kafka_mapper(FieldNameBasedTupleToKafkaMapper::new("word", "count"))
///     .with_producer_property("linger.ms", "5");
/// # let _ = bolt;
/// ```
pub struct KafkaBolt {
    props: Vec<(String, String)>,
    selector: Option<Arc<dyn TopicSelector>>,
    mapper: Arc<dyn TupleToKafkaMapper>,
    fire_and_forget: bool,
    run: Option<Running>,
}

impl Clone for KafkaBolt {
    /// A bolt with the same configuration, not yet prepared.
    fn clone(&self) -> Self {
        KafkaBolt {
            props: self.props.clone(),
            selector: self.selector.clone(),
            mapper: self.mapper.clone(),
            fire_and_forget: self.fire_and_forget,
            run: None,
        }
    }
}

struct Running {
    producer: BaseProducer<BoltContext>,
    deliveries: Arc<Deliveries>,
    pending: HashMap<usize, Tuple>,
    next_id: usize,
    component: String,
}

impl KafkaBolt {
    /// A bolt writing to the brokers `bootstrap_servers`; give it a topic with
    /// [`with_topic`](Self::with_topic) or [`with_topic_selector`](Self::with_topic_selector).
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaBolt {
            props: vec![("bootstrap.servers".into(), bootstrap_servers.into())],
            selector: None,
            mapper: Arc::new(FieldNameBasedTupleToKafkaMapper::default()),
            fire_and_forget: false,
            run: None,
        }
    }

    /// Writes every tuple to `topic` (a [`DefaultTopicSelector`]).
    pub fn with_topic(self, topic: impl Into<String>) -> Self {
        self.with_topic_selector(DefaultTopicSelector::new(topic))
    }

    /// Picks each tuple's topic with `selector` (Storm's `withTopicSelector`).
    pub fn with_topic_selector(mut self, selector: impl TopicSelector) -> Self {
        self.selector = Some(Arc::new(selector));
        self
    }

    /// Makes records with `mapper` (Storm's `withTupleToKafkaMapper`).
    pub fn with_tuple_to_kafka_mapper(mut self, mapper: impl TupleToKafkaMapper) -> Self {
        self.mapper = Arc::new(mapper);
        self
    }

    /// Passes a producer property to librdkafka as is (Storm's `withProducerProperties`),
    /// e.g. `acks`, `linger.ms`, `message.timeout.ms`, `compression.type`.
    pub fn with_producer_property(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        let (key, value) = (key.into(), value.into());
        match self.props.iter_mut().find(|(k, _)| *k == key) {
            Some(p) => p.1 = value,
            None => self.props.push((key, value)),
        }
        self
    }

    /// Acks each input as soon as its record is handed to the producer, without waiting
    /// for the broker (Storm's `setFireAndForget`; default `false`).
    pub fn fire_and_forget(mut self, yes: bool) -> Self {
        self.fire_and_forget = yes;
        self
    }
}

impl Bolt for KafkaBolt {
    fn prepare(&mut self, _conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        let component = ctx.this_component_id().to_string();
        if self.selector.is_none() {
            return Err(format!(
                "KafkaBolt {component} has no topic: call with_topic(..) or with_topic_selector(..)"
            )
            .into());
        }
        let mut cc = ClientConfig::new();
        for (k, v) in &self.props {
            cc.set(k, v);
        }
        let deliveries = Arc::new(Deliveries::default());
        let producer: BaseProducer<BoltContext> = cc
            .create_with_context(BoltContext(deliveries.clone()))
            .map_err(|e| format!("KafkaBolt {component}: cannot create the Kafka producer: {e}"))?;
        self.run = Some(Running {
            producer,
            deliveries,
            pending: HashMap::new(),
            next_id: 0,
            component,
        });
        Ok(())
    }

    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        let Some(mut run) = self.run.take() else {
            out.fail(&input);
            return;
        };
        if !input.is_tick() {
            self.send(&mut run, input, out);
        }
        run.drain(out);
        self.run = Some(run);
    }

    fn cleanup(&mut self) {
        let Some(run) = self.run.take() else {
            return;
        };
        // Records still in flight get FLUSH_TIMEOUT; their inputs are neither acked nor
        // failed and time out (so they replay). The producer is dropped off this thread:
        // librdkafka's teardown can take long when a broker is gone.
        let _ = run.producer.flush(FLUSH_TIMEOUT);
        let _ = std::thread::Builder::new()
            .name("kafka-bolt-close".into())
            .spawn(move || drop(run));
    }

    fn component_configuration(&self) -> Config {
        let mut c = Config::new();
        if !self.fire_and_forget {
            c.set_tick_tuple_freq_secs(TICK_SECS);
        }
        c
    }

    fn declare_output_fields(&self, _d: &mut OutputFieldsDeclarer) {}
}

impl KafkaBolt {
    fn send(&self, run: &mut Running, input: Tuple, out: &mut OutputCollector<'_>) {
        let selector = self.selector.as_ref().expect("checked in prepare");
        let Some(topic) = selector.topic(&input) else {
            // Storm: "skipping key = ..., topic selector returned null": acked.
            out.ack(&input);
            return;
        };
        let record = self
            .mapper
            .key(&input)
            .and_then(|k| Ok((k, self.mapper.message(&input)?)));
        let (key, message) = match record {
            Ok(km) => km,
            Err(e) => {
                out.report_error(&format!(
                    "KafkaBolt {}: cannot make a record of the tuple from {}:{}: {e}",
                    run.component,
                    input.source_component(),
                    input.source_stream()
                ));
                out.fail(&input);
                return;
            }
        };
        let id = run.next_id;
        run.next_id = run.next_id.wrapping_add(1);
        let mut waited = Duration::ZERO;
        loop {
            let mut rec: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(&topic, id);
            if let Some(k) = &key {
                rec = rec.key(k.as_slice());
            }
            if let Some(m) = &message {
                rec = rec.payload(m.as_slice());
            }
            match run.producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if waited < QUEUE_FULL_WAIT =>
                {
                    // Serve delivery reports to make room.
                    run.producer.poll(Duration::from_millis(50));
                    waited += Duration::from_millis(50);
                    run.drain(out);
                }
                Err((e, _)) => {
                    out.report_error(&format!(
                        "KafkaBolt {}: cannot send to topic '{topic}': {e}; the input fails",
                        run.component
                    ));
                    out.fail(&input);
                    return;
                }
            }
        }
        if self.fire_and_forget {
            out.ack(&input);
        } else {
            run.pending.insert(id, input);
        }
    }
}

impl Running {
    /// Acks or fails the inputs whose delivery reports came in.
    fn drain(&mut self, out: &mut OutputCollector<'_>) {
        self.producer.poll(Duration::ZERO);
        let reports = std::mem::take(&mut *self.deliveries.lock());
        for (id, result) in reports {
            let Some(input) = self.pending.remove(&id) else {
                continue;
            };
            match result {
                Ok(()) => out.ack(&input),
                Err(e) => {
                    out.report_error(&format!(
                        "KafkaBolt {}: delivery failed: {e}; the input fails (and replays)",
                        self.component
                    ));
                    out.fail(&input);
                }
            }
        }
        out.set_gauge("kafka.bolt.pending", self.pending.len() as i64);
    }
}
