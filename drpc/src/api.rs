//! The wire format of `squall drpc`: HTTP/1.1 with JSON bodies.
//!
//! **Squall's DRPC API** on `drpc.port` (3772; the same on `drpc.invocations.port`,
//! 3773), for clients and topologies. Every call is a `POST` with a JSON body:
//!
//! | path | body → answer |
//! |---|---|
//! | `/drpc/v1/execute` | [`ExecuteRequest`] `{"function", "args"}` → [`ExecuteResponse`] `{"result"}` (waits for the answer) |
//! | `/drpc/v1/fetch` | [`FetchRequest`] `{"function", "max", "wait_ms"}` → [`FetchResponse`] `{"requests": [{"id", "args", "server"}]}` |
//! | `/drpc/v1/result` | [`ResultRequest`] `{"id", "result"}` → `{}` |
//! | `/drpc/v1/fail` | [`FailRequest`] `{"id", "message"}` → `{}` |
//!
//! **Storm's DRPC HTTP** on `drpc.http.port` (3774): `GET /drpc/<function>/<args>`,
//! `GET /drpc/<function>` (empty arguments) and `POST /drpc/<function>` (the body is the
//! argument) answer `200` with the result as `text/plain`. Arguments in the path are
//! percent-decoded and must be UTF-8.
//!
//! **Errors**, on both, are Storm's DRPC HTTP errors: a JSON [`ErrorBody`]
//! `{"error": KIND, "errorMessage": "..."}` with
//!
//! | `error` | status | meaning | [`DrpcError`] |
//! |---|---|---|---|
//! | `FAILED_REQUEST` | 400 | the topology failed the request; `errorMessage` is its message | [`Failed`](DrpcError::Failed) |
//! | `SERVER_TIMEOUT` | 504 | no answer within `drpc.request.timeout.secs` (also in `timeoutSecs`) | [`Timeout`](DrpcError::Timeout) |
//! | `SERVER_SHUTDOWN` | 503 | the server is stopping | [`Unreachable`](DrpcError::Unreachable) |
//! | `SERVER_BUSY` | 503 | too many clients waiting on this port; try again | [`Refused`](DrpcError::Refused) |
//! | `BAD_REQUEST` | 400 | malformed body, invalid function name, bad `max` | [`Refused`](DrpcError::Refused) |
//! | `UNKNOWN_REQUEST` | 404 | `result`/`fail` for an id that is not outstanding | [`Refused`](DrpcError::Refused) |
//! | `NOT_FOUND`, `METHOD_NOT_ALLOWED`, `PAYLOAD_TOO_LARGE` | 404, 405, 413 | no such endpoint; body over `drpc.max_buffer_size` | [`Refused`](DrpcError::Refused) |

use serde::{Deserialize, Serialize};

use crate::{DrpcError, DrpcRequest};

/// Path prefix of Squall's DRPC API.
pub const PREFIX: &str = "/drpc/v1";

/// Path prefix of Storm's DRPC HTTP interface.
pub const HTTP_PREFIX: &str = "/drpc";

/// `error` of a request the topology failed (Storm's `DRPCExceptionType`).
pub const FAILED_REQUEST: &str = "FAILED_REQUEST";
/// `error` of a request that timed out.
pub const SERVER_TIMEOUT: &str = "SERVER_TIMEOUT";
/// `error` when the server is shutting down.
pub const SERVER_SHUTDOWN: &str = "SERVER_SHUTDOWN";
/// `error` when too many clients wait on one port.
pub const SERVER_BUSY: &str = "SERVER_BUSY";
/// `error` of a malformed or invalid request.
pub const BAD_REQUEST: &str = "BAD_REQUEST";
/// `error` of a `result` or `fail` for an id that is not outstanding.
pub const UNKNOWN_REQUEST: &str = "UNKNOWN_REQUEST";
/// `error` of an unknown path.
pub const NOT_FOUND: &str = "NOT_FOUND";
/// `error` of a known path with another method.
pub const METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";
/// `error` of a body over `drpc.max_buffer_size`.
pub const PAYLOAD_TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";

/// Longest wait a fetch may ask for, in milliseconds.
pub const MAX_FETCH_WAIT_MS: u64 = 1000;

/// `POST /drpc/v1/execute`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecuteRequest {
    /// The function to call.
    pub function: String,
    /// Its argument (default empty).
    #[serde(default)]
    pub args: String,
}

/// The answer to an execute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecuteResponse {
    /// The topology's result.
    pub result: String,
}

/// `POST /drpc/v1/fetch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    /// The function served.
    pub function: String,
    /// The most requests to take (default 1). 0 takes nothing and does not wait: it only
    /// tells the server that the function is still served (a heartbeat).
    #[serde(default = "one")]
    pub max: usize,
    /// How long to wait for a request when none is pending, in ms (at most 1000;
    /// default 200).
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

fn one() -> usize {
    1
}

/// The answer to a fetch: possibly no requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchResponse {
    /// The requests taken, oldest first.
    pub requests: Vec<DrpcRequest>,
}

/// `POST /drpc/v1/result`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultRequest {
    /// The request's id.
    pub id: String,
    /// The answer.
    pub result: String,
}

/// `POST /drpc/v1/fail`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailRequest {
    /// The request's id.
    pub id: String,
    /// Why (default `Request failed`, Storm's).
    #[serde(default)]
    pub message: Option<String>,
}

/// The message of a fail without one (Storm's).
pub const DEFAULT_FAIL_MESSAGE: &str = "Request failed";

/// An error answer (Storm's DRPC HTTP error body).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The kind: [`FAILED_REQUEST`], [`SERVER_TIMEOUT`], ...
    pub error: String,
    /// What happened, for a person (for [`FAILED_REQUEST`], the topology's message).
    #[serde(rename = "errorMessage")]
    pub error_message: String,
    /// For [`SERVER_TIMEOUT`]: the server's request timeout in seconds.
    #[serde(
        rename = "timeoutSecs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout_secs: Option<u64>,
}

impl ErrorBody {
    /// An error of `kind` with `message`.
    pub fn new(kind: &str, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: kind.to_owned(),
            error_message: message.into(),
            timeout_secs: None,
        }
    }

    /// The HTTP status that goes with the kind (500 for a kind not listed).
    pub fn status(&self) -> u16 {
        match self.error.as_str() {
            FAILED_REQUEST | BAD_REQUEST => 400,
            UNKNOWN_REQUEST | NOT_FOUND => 404,
            METHOD_NOT_ALLOWED => 405,
            PAYLOAD_TOO_LARGE => 413,
            SERVER_SHUTDOWN | SERVER_BUSY => 503,
            SERVER_TIMEOUT => 504,
            _ => 500,
        }
    }

    /// The error body of the outcome of an execute.
    pub fn from_error(e: &DrpcError) -> ErrorBody {
        match e {
            DrpcError::Timeout { secs, .. } => ErrorBody {
                timeout_secs: Some(*secs),
                ..ErrorBody::new(SERVER_TIMEOUT, e.to_string())
            },
            DrpcError::Failed { message, .. } => ErrorBody::new(FAILED_REQUEST, message.clone()),
            DrpcError::Unreachable { message, .. } => {
                ErrorBody::new(SERVER_SHUTDOWN, message.clone())
            }
            DrpcError::Refused(message) => ErrorBody::new(BAD_REQUEST, message.clone()),
        }
    }

    /// The [`DrpcError`] a client of `server` reports for this answer to a call of
    /// `function`.
    pub fn into_error(self, function: &str, server: &str) -> DrpcError {
        match self.error.as_str() {
            SERVER_TIMEOUT => DrpcError::Timeout {
                function: function.to_owned(),
                secs: self.timeout_secs.unwrap_or(0),
            },
            FAILED_REQUEST => DrpcError::Failed {
                function: function.to_owned(),
                message: self.error_message,
            },
            SERVER_SHUTDOWN => DrpcError::Unreachable {
                server: server.to_owned(),
                message: self.error_message,
            },
            _ => DrpcError::Refused(format!("{} (DRPC server {server})", self.error_message)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_survives_the_wire() {
        let cases = [
            DrpcError::Timeout {
                function: "f".into(),
                secs: 7,
            },
            DrpcError::Failed {
                function: "f".into(),
                message: "boom".into(),
            },
            DrpcError::Unreachable {
                server: "h:1".into(),
                message: "the DRPC server is shutting down".into(),
            },
        ];
        for e in cases {
            let body = ErrorBody::from_error(&e);
            let json = serde_json::to_string(&body).unwrap();
            let back: ErrorBody = serde_json::from_str(&json).unwrap();
            assert_eq!(back.into_error("f", "h:1"), e, "{json}");
        }
        let timeout = ErrorBody::from_error(&DrpcError::Timeout {
            function: "f".into(),
            secs: 7,
        });
        assert_eq!(timeout.status(), 504);
        assert_eq!(
            serde_json::to_value(&timeout).unwrap(),
            serde_json::json!({
                "error": "SERVER_TIMEOUT",
                "errorMessage": "DRPC request 'f' timed out after 7 s without an answer",
                "timeoutSecs": 7
            })
        );
        let refused = ErrorBody::new(UNKNOWN_REQUEST, "unknown id").into_error("f", "h:1");
        assert_eq!(
            refused.to_string(),
            "DRPC server refused: unknown id (DRPC server h:1)"
        );
    }

    #[test]
    fn requests_take_defaults() {
        let f: FetchRequest = serde_json::from_str(r#"{"function":"w"}"#).unwrap();
        assert_eq!((f.max, f.wait_ms), (1, None));
        let e: ExecuteRequest = serde_json::from_str(r#"{"function":"w"}"#).unwrap();
        assert_eq!(e.args, "");
        let x: FailRequest = serde_json::from_str(r#"{"id":"1"}"#).unwrap();
        assert_eq!(x.message, None);
    }
}
