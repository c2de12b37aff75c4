//! Storm's multilang wire format: one JSON document per message, followed by a line
//! `end`. What the subprocess sends is parsed into [`ShellMsg`]; what Squall sends is
//! written by the `write_*` functions, field for field as Storm's `JsonSerializer`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Map, Value as Json};
use squall_api::{Config, Grouping, TaskId, TopologyContext, Value, DEFAULT_STREAM};

/// Storm's task id of system tuples (ticks, heartbeats) on the wire.
pub(crate) const SYSTEM_TASK: i64 = -1;
/// The stream of the heartbeat tuples a shell bolt sends every second.
pub const HEARTBEAT_STREAM: &str = "__heartbeat";

/// The terminator of every message.
pub(crate) const END: &[u8] = b"\nend\n";

/// A message from the subprocess.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ShellMsg {
    /// The handshake's answer.
    Pid(u32),
    /// `{"command":"emit", ...}`.
    Emit(EmitMsg),
    /// `{"command":"ack","id":...}`.
    Ack(Json),
    /// `{"command":"fail","id":...}`.
    Fail(Json),
    /// `{"command":"error","msg":...}`.
    Error(String),
    /// `{"command":"log","msg":...,"level":0-4}` (2, info, when absent).
    Log { msg: String, level: i64 },
    /// `{"command":"metrics","name":...,"params":...}`.
    Metrics { name: String, params: Json },
    /// `{"command":"sync"}`.
    Sync,
    /// A command this runtime does not know (ignored, as Storm's bolt does).
    Unknown(String),
}

/// An emit, as the subprocess sent it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EmitMsg {
    /// The stream (`default` when absent).
    pub stream: String,
    /// Anchor tuple ids (bolts): one id string or a list.
    pub anchors: Vec<Json>,
    /// The receiving task of a direct emit.
    pub task: Option<i64>,
    /// The values.
    pub tuple: Vec<Value>,
    /// Whether the subprocess reads the task ids back (absent means yes).
    pub need_task_ids: bool,
    /// The message id of a spout's tracked emit.
    pub id: Option<Json>,
}

#[derive(Deserialize)]
struct RawMsg {
    command: Option<String>,
    pid: Option<Json>,
    id: Option<Json>,
    anchors: Option<Json>,
    stream: Option<String>,
    task: Option<Json>,
    tuple: Option<Vec<Value>>,
    need_task_ids: Option<bool>,
    msg: Option<Json>,
    level: Option<Json>,
    name: Option<String>,
    params: Option<Json>,
}

/// Why a message could not be understood.
pub(crate) type ParseError = String;

/// Parses one message (the text before its `end` line).
pub(crate) fn parse(text: &[u8]) -> Result<ShellMsg, ParseError> {
    let raw: RawMsg =
        serde_json::from_slice(text).map_err(|e| format!("not a JSON object: {e}"))?;
    let Some(command) = raw.command else {
        return match raw.pid.as_ref().and_then(Json::as_u64) {
            Some(pid) if pid <= u32::MAX as u64 => Ok(ShellMsg::Pid(pid as u32)),
            _ => Err(
                "a message without \"command\" (and not a handshake answer {\"pid\": N})".into(),
            ),
        };
    };
    let text_of = |v: Option<Json>| match v {
        Some(Json::String(s)) => s,
        Some(Json::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    Ok(match command.as_str() {
        "emit" => {
            let tuple = raw.tuple.ok_or("an emit without \"tuple\"")?;
            let anchors = match raw.anchors {
                None | Some(Json::Null) => Vec::new(),
                Some(Json::Array(a)) => a,
                Some(one) => vec![one],
            };
            let task = match raw.task {
                None | Some(Json::Null) => None,
                Some(t) => Some(
                    t.as_i64()
                        .ok_or(format!("an emit whose \"task\" is {t}, not a task id"))?,
                ),
            };
            ShellMsg::Emit(EmitMsg {
                stream: raw.stream.unwrap_or_else(|| DEFAULT_STREAM.to_owned()),
                anchors,
                // Storm: a direct emit to task 0 is a plain emit.
                task: task.filter(|&t| t != 0),
                tuple,
                need_task_ids: raw.need_task_ids.unwrap_or(true),
                id: raw.id.filter(|id| !id.is_null()),
            })
        }
        "ack" => ShellMsg::Ack(raw.id.ok_or("an ack without \"id\"")?),
        "fail" => ShellMsg::Fail(raw.id.ok_or("a fail without \"id\"")?),
        "error" => ShellMsg::Error(text_of(raw.msg)),
        "log" => ShellMsg::Log {
            msg: text_of(raw.msg),
            level: raw.level.as_ref().and_then(Json::as_i64).unwrap_or(2),
        },
        "metrics" => ShellMsg::Metrics {
            name: raw
                .name
                .filter(|n| !n.is_empty())
                .ok_or("a metrics message without \"name\"")?,
            params: raw.params.unwrap_or(Json::Null),
        },
        "sync" => ShellMsg::Sync,
        _ => ShellMsg::Unknown(command),
    })
}

/// Appends `msg` and its terminator to `buf`.
pub(crate) fn write_json(buf: &mut Vec<u8>, msg: &impl serde::Serialize) {
    serde_json::to_writer(&mut *buf, msg).expect("writing JSON to a Vec cannot fail");
    buf.extend_from_slice(END);
}

/// A tuple for a bolt: `{"id","comp","stream","task","tuple"}`.
pub(crate) fn write_tuple(
    buf: &mut Vec<u8>,
    id: &str,
    comp: Option<&str>,
    stream: &str,
    task: i64,
    values: &[Value],
) {
    #[derive(serde::Serialize)]
    struct BoltMsg<'a> {
        id: &'a str,
        comp: Option<&'a str>,
        stream: &'a str,
        task: i64,
        tuple: &'a [Value],
    }
    write_json(
        buf,
        &BoltMsg {
            id,
            comp,
            stream,
            task,
            tuple: values,
        },
    )
}

/// A command for a spout: `{"command": ..., "id": ...}` (`id` is `""` for `next`,
/// `activate` and `deactivate`, as in Storm).
pub(crate) fn write_spout_command(buf: &mut Vec<u8>, command: &str, id: &Json) {
    write_json(buf, &json!({"command": command, "id": id}))
}

/// The task ids answering an emit: a bare JSON array.
pub(crate) fn write_task_ids(buf: &mut Vec<u8>, tasks: &[TaskId]) {
    buf.push(b'[');
    for (i, t) in tasks.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(t.0.to_string().as_bytes());
    }
    buf.push(b']');
    buf.extend_from_slice(END);
}

/// The handshake: `{"conf": ..., "pidDir": ..., "context": ...}`.
pub(crate) fn handshake(conf: &Config, pid_dir: &str, context: Json) -> Vec<u8> {
    let conf: Map<String, Json> = conf
        .iter()
        .map(|(k, v)| (k.to_owned(), serde_json::to_value(v).unwrap_or(Json::Null)))
        .collect();
    let mut buf = Vec::new();
    write_json(
        &mut buf,
        &json!({"conf": conf, "pidDir": pid_dir, "context": context}),
    );
    buf
}

/// A grouping as Storm's `TopologyContext.toJSONString` writes it (the name of the
/// Thrift union field that is set; global grouping is fields grouping on no fields).
pub(crate) fn grouping_json(g: &Grouping) -> Json {
    match g {
        Grouping::Shuffle => json!({"type": "SHUFFLE"}),
        Grouping::Fields(f) => json!({"type": "FIELDS", "fields": f.names()}),
        Grouping::Global => json!({"type": "FIELDS", "fields": []}),
        Grouping::All => json!({"type": "ALL"}),
        Grouping::None => json!({"type": "NONE"}),
        Grouping::Direct => json!({"type": "DIRECT"}),
        Grouping::LocalOrShuffle => json!({"type": "LOCAL_OR_SHUFFLE"}),
        Grouping::PartialKey(_) | Grouping::Custom(_) => json!({"type": "CUSTOM_SERIALIZED"}),
    }
}

/// The handshake's `context`, with every key Storm's `TopologyContext.toJSONString`
/// writes.
pub(crate) fn context_json(ctx: &TopologyContext) -> Json {
    let layout = ctx.layout();
    let spec = ctx.spec();
    let me = ctx.this_component_id().as_str();
    let mut task_component = Map::new();
    task_component.insert(SYSTEM_TASK.to_string(), json!("__system"));
    for (component, tasks) in layout.components() {
        for t in &tasks.tasks {
            task_component.insert(t.0.to_string(), json!(component.as_str()));
        }
    }
    let outputs = spec.components.get(me).map(|c| &c.outputs);
    let streams: Vec<&str> = outputs
        .map(|o| o.keys().map(|s| s.as_str()).collect())
        .unwrap_or_default();
    let mut output_fields = Map::new();
    let mut targets = Map::new();
    for (stream, decl) in outputs.into_iter().flatten() {
        output_fields.insert(stream.to_string(), json!(decl.fields.names()));
        let mut by_target = Map::new();
        for (target, grouping) in spec.subscribers(me, stream.as_str()) {
            by_target.insert(target.to_string(), grouping_json(grouping));
        }
        targets.insert(stream.to_string(), Json::Object(by_target));
    }
    let mut source_grouping: BTreeMap<String, Map<String, Json>> = BTreeMap::new();
    let mut source_fields: BTreeMap<String, Map<String, Json>> = BTreeMap::new();
    for (source, grouping) in ctx.this_sources() {
        let (component, stream) = (source.component.to_string(), source.stream.to_string());
        let fields = ctx
            .component_output_fields(&component, &stream)
            .map(|f| json!(f.names()))
            .unwrap_or_else(|| json!([]));
        source_grouping
            .entry(component.clone())
            .or_default()
            .insert(stream.clone(), grouping_json(&grouping));
        source_fields
            .entry(component)
            .or_default()
            .insert(stream, fields);
    }
    json!({
        "task->component": task_component,
        "taskid": ctx.this_task_id().0,
        "componentid": me,
        "streams": streams,
        "stream->outputfields": output_fields,
        "stream->target->grouping": targets,
        "source->stream->grouping": source_grouping,
        "source->stream->fields": source_fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_storm_py_and_pystorm_send() {
        assert_eq!(parse(br#"{"pid": 1234}"#), Ok(ShellMsg::Pid(1234)));
        let m = parse(br#"{"command": "emit", "anchors": ["7"], "tuple": ["w\u00e9"]}"#).unwrap();
        let ShellMsg::Emit(e) = m else {
            panic!("{m:?}")
        };
        assert_eq!(e.stream, "default");
        assert_eq!(e.anchors, vec![json!("7")]);
        assert_eq!(e.tuple, vec![Value::from("wé")]);
        assert!(e.need_task_ids);
        assert_eq!(e.task, None);
        // One anchor as a plain string; need_task_ids false; a direct task.
        let ShellMsg::Emit(e) = parse(
            br#"{"command":"emit","anchors":"9","stream":"s","task":4,"need_task_ids":false,"tuple":[1,2.5,null]}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (e.anchors, e.stream.as_str(), e.task, e.need_task_ids),
            (vec![json!("9")], "s", Some(4), false)
        );
        assert_eq!(e.tuple, vec![Value::Int(1), Value::Float(2.5), Value::Null]);
        assert_eq!(
            parse(br#"{"command":"ack","id":"3"}"#),
            Ok(ShellMsg::Ack(json!("3")))
        );
        assert_eq!(
            parse(br#"{"command":"log","msg":"hi"}"#),
            Ok(ShellMsg::Log {
                msg: "hi".into(),
                level: 2
            })
        );
        assert_eq!(parse(br#"{"command":"sync"}"#), Ok(ShellMsg::Sync));
        assert_eq!(
            parse(br#"{"command":"dance"}"#),
            Ok(ShellMsg::Unknown("dance".into()))
        );
    }

    #[test]
    fn refuses_garbage_with_a_reason() {
        assert!(parse(b"hello world")
            .unwrap_err()
            .contains("not a JSON object"));
        assert!(parse(b"[1,2]").unwrap_err().contains("not a JSON object"));
        assert!(parse(br#"{"x":1}"#)
            .unwrap_err()
            .contains("without \"command\""));
        assert!(parse(br#"{"command":"emit"}"#)
            .unwrap_err()
            .contains("without \"tuple\""));
        assert!(parse(br#"{"command":"ack"}"#)
            .unwrap_err()
            .contains("without \"id\""));
    }

    #[test]
    fn writes_messages_as_storm_does() {
        let mut buf = Vec::new();
        write_tuple(
            &mut buf,
            "5",
            Some("spout"),
            "default",
            3,
            &[Value::from("ü")],
        );
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "{\"id\":\"5\",\"comp\":\"spout\",\"stream\":\"default\",\"task\":3,\"tuple\":[\"ü\"]}\nend\n"
        );
        let mut buf = Vec::new();
        write_task_ids(&mut buf, &[TaskId(4), TaskId(7)]);
        assert_eq!(buf, b"[4,7]\nend\n");
        let mut buf = Vec::new();
        write_spout_command(&mut buf, "next", &json!(""));
        assert_eq!(buf, b"{\"command\":\"next\",\"id\":\"\"}\nend\n");
    }
}
