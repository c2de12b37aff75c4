//! Records read from Kafka and how they become tuples (Storm's `RecordTranslator`).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use squall_api::{Fields, Value, Values, DEFAULT_STREAM};

/// One record read from a partition (Storm's `ConsumerRecord`), with its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The record's offset in its partition.
    pub offset: i64,
    /// The key, if any.
    pub key: Option<Vec<u8>>,
    /// The value (payload), if any (`None` for a tombstone).
    pub value: Option<Vec<u8>>,
    /// The record's timestamp, in milliseconds since the epoch, if it has one.
    pub timestamp: Option<i64>,
}

impl KafkaRecord {
    /// The key as text (invalid UTF-8 replaced by U+FFFD, as Kafka's
    /// `StringDeserializer` would show it).
    pub fn key_str(&self) -> Option<Cow<'_, str>> {
        self.key.as_deref().map(String::from_utf8_lossy)
    }

    /// The value as text (invalid UTF-8 replaced by U+FFFD).
    pub fn value_str(&self) -> Option<Cow<'_, str>> {
        self.value.as_deref().map(String::from_utf8_lossy)
    }

    pub(crate) fn from_message(m: &rdkafka::message::BorrowedMessage<'_>, topic: Arc<str>) -> Self {
        use rdkafka::Message;
        KafkaRecord {
            topic,
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            timestamp: m.timestamp().to_millis(),
        }
    }
}

impl fmt::Debug for KafkaRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaRecord")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("key", &self.key_str())
            .field("value", &self.value_str())
            .field("timestamp", &self.timestamp)
            .finish()
    }
}

/// A tuple made from a record: its values and the stream they go on.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaTuple {
    /// The stream (one the translator declares).
    pub stream: String,
    /// The values, one per declared field.
    pub values: Values,
}

impl KafkaTuple {
    /// A tuple on the default stream.
    pub fn new(values: Values) -> Self {
        KafkaTuple {
            stream: DEFAULT_STREAM.to_owned(),
            values,
        }
    }

    /// A tuple on `stream`.
    pub fn on_stream(stream: impl Into<String>, values: Values) -> Self {
        KafkaTuple {
            stream: stream.into(),
            values,
        }
    }
}

/// Turns records into tuples (Storm's `RecordTranslator`).
///
/// `translate` returning `None` skips the record: it is treated as processed (its offset
/// can be committed) and nothing is emitted, as in Storm.
pub trait RecordTranslator: Send + Sync + 'static {
    /// The tuple for `record`, or `None` to skip it.
    fn translate(&self, record: &KafkaRecord) -> Option<KafkaTuple>;

    /// The streams `translate` emits on, with their fields.
    fn streams(&self) -> Vec<(String, Fields)>;
}

/// Storm's default translator: fields `topic, partition, offset, key, value` on the
/// default stream; key and value are strings (invalid UTF-8 replaced by U+FFFD, a missing
/// key or value is null).
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultRecordTranslator;

impl RecordTranslator for DefaultRecordTranslator {
    fn translate(&self, r: &KafkaRecord) -> Option<KafkaTuple> {
        let text = |b: &Option<Vec<u8>>| match b {
            Some(b) => Value::from(String::from_utf8_lossy(b).as_ref()),
            None => Value::Null,
        };
        let mut values = Values::new();
        values.push(Value::from(r.topic.as_ref()));
        values.push(Value::Int(i64::from(r.partition)));
        values.push(Value::Int(r.offset));
        values.push(text(&r.key));
        values.push(text(&r.value));
        Some(KafkaTuple::new(values))
    }

    fn streams(&self) -> Vec<(String, Fields)> {
        vec![(
            DEFAULT_STREAM.to_owned(),
            Fields::new(["topic", "partition", "offset", "key", "value"]),
        )]
    }
}

type TranslateFn = dyn Fn(&KafkaRecord) -> Option<Values> + Send + Sync;

/// A translator from a function and the fields it fills, on one stream (Storm's
/// `SimpleRecordTranslator`).
///
/// ```
/// use squall_api::{values, Fields};
/// use squall_kafka::{RecordTranslator, SimpleRecordTranslator};
/// let sentences = SimpleRecordTranslator::new(["sentence"], |r| {
///     r.value_str().map(|v| values![v.as_ref()])
/// });
/// assert_eq!(sentences.streams()[0].1, Fields::new(["sentence"]));
/// ```
#[derive(Clone)]
pub struct SimpleRecordTranslator {
    fields: Fields,
    stream: String,
    func: Arc<TranslateFn>,
}

impl SimpleRecordTranslator {
    /// Emits `func(record)` with `fields` on the default stream; `None` skips the
    /// record.
    pub fn new(
        fields: impl Into<Fields>,
        func: impl Fn(&KafkaRecord) -> Option<Values> + Send + Sync + 'static,
    ) -> Self {
        SimpleRecordTranslator {
            fields: fields.into(),
            stream: DEFAULT_STREAM.to_owned(),
            func: Arc::new(func),
        }
    }

    /// Emits on `stream` instead of the default stream.
    pub fn stream(mut self, stream: impl Into<String>) -> Self {
        self.stream = stream.into();
        self
    }
}

impl RecordTranslator for SimpleRecordTranslator {
    fn translate(&self, record: &KafkaRecord) -> Option<KafkaTuple> {
        (self.func)(record).map(|values| KafkaTuple::on_stream(self.stream.clone(), values))
    }

    fn streams(&self) -> Vec<(String, Fields)> {
        vec![(self.stream.clone(), self.fields.clone())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_translator_emits_storms_five_fields() {
        let r = KafkaRecord {
            topic: "t".into(),
            partition: 2,
            offset: 41,
            key: None,
            value: Some(b"caf\xc3\xa9 \xff".to_vec()),
            timestamp: Some(5),
        };
        let t = DefaultRecordTranslator.translate(&r).unwrap();
        assert_eq!(t.stream, DEFAULT_STREAM);
        assert_eq!(
            t.values.to_vec(),
            vec![
                Value::from("t"),
                Value::Int(2),
                Value::Int(41),
                Value::Null,
                Value::from("café \u{fffd}")
            ]
        );
        assert_eq!(
            DefaultRecordTranslator.streams()[0].1,
            Fields::new(["topic", "partition", "offset", "key", "value"])
        );
    }
}
