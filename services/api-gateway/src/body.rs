//! Request bodies: read with a size limit, parsed as JSON, and validated field by field like
//! Cinder's JSON schemas, with errors that name the field and what is allowed.

use std::{
    collections::HashMap,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::{Body, Bytes, HttpBody},
    http::StatusCode,
};
use serde_json::{Map, Value};
use tokio::time::Sleep;

use basalt::error::excerpt;

use crate::fault::Fault;

/// Cinder's default `osapi_max_request_body_size` is 112 KiB; 1 MiB leaves room for metadata.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// A request body that fails once its deadline passes before it has all arrived, so a client that
/// announces more bytes than it sends cannot hold a handler (and its connection) forever.
pub struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
}

/// The error a [`DeadlineBody`] ends with.
#[derive(Debug)]
struct BodyTimedOut(Duration);

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body did not arrive within {} s", self.0.as_secs_f64())
    }
}

impl std::error::Error for BodyTimedOut {}

impl DeadlineBody {
    pub fn new(inner: Body, timeout: Duration) -> Self {
        Self { inner, deadline: Box::pin(tokio::time::sleep(timeout)), timeout }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut(self.timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

pub async fn read_json(body: Body) -> Result<Value, Fault> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|error| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(cause) = source {
            if let Some(timed_out) = cause.downcast_ref::<BodyTimedOut>() {
                return Fault::new(StatusCode::REQUEST_TIMEOUT, timed_out.to_string());
            }
            if cause.is::<http_body_util::LengthLimitError>() {
                return Fault::new(StatusCode::PAYLOAD_TOO_LARGE, "the request body is larger than 1 MiB");
            }
            source = cause.source();
        }
        Fault::bad_request("the request body could not be read")
    })?;
    if bytes.is_empty() {
        return Err(Fault::bad_request("the request needs a JSON body"));
    }
    serde_json::from_slice(&bytes)
        .map_err(|error| Fault::bad_request(format!("malformed JSON in the request body: {error}")))
}

/// The body as an object.
pub fn object(body: &Value) -> Result<&Map<String, Value>, Fault> {
    body.as_object().ok_or_else(|| Fault::bad_request("the body must be a JSON object"))
}

/// `body[key]`, which must be the body's only key.
pub fn only<'a>(body: &'a Value, key: &str) -> Result<&'a Value, Fault> {
    let single = body.as_object().filter(|object| object.len() == 1).and_then(|object| object.get(key));
    single.ok_or_else(|| Fault::bad_request(format!("the body must be {{\"{key}\": ...}} and nothing else")))
}

/// `body[key]` as an object, beside which the body may have other keys (the caller checks them).
pub fn member<'a>(body: &'a Value, key: &str) -> Result<&'a Map<String, Value>, Fault> {
    body.get(key)
        .and_then(Value::as_object)
        .ok_or_else(|| Fault::bad_request(format!("the body must be {{\"{key}\": {{...}}}}")))
}

/// `{"<key>": {...}}`: the object under the body's only key.
pub fn section<'a>(body: &'a Value, key: &str) -> Result<&'a Map<String, Value>, Fault> {
    only(body, key)?.as_object().ok_or_else(|| Fault::bad_request(format!("the body must be {{\"{key}\": {{...}}}}")))
}

/// `{"<key>": {"<name>": "<value>", ...}}`: a string map under the body's only key.
pub fn map_body(body: &Value, key: &str) -> Result<HashMap<String, String>, Fault> {
    only(body, key)?;
    string_map(object(body)?, key)?
        .ok_or_else(|| Fault::bad_request(format!("the body must be {{\"{key}\": {{...}}}}")))
}

/// An action body `{"<action>": {...}}`: the action's name and its arguments (none when the value
/// is null, as in `{"os-force_delete": null}`). Exactly one action per body: Cinder's schemas allow
/// one, and running one of two silently would surprise whoever sent them. `actions` lists the
/// allowed ones for the error.
pub fn action<'a>(body: &'a Value, actions: &str) -> Result<(&'a str, Arguments<'a>), Fault> {
    let single = body.as_object().filter(|object| object.len() == 1).and_then(|object| object.iter().next());
    let (name, argument) = single.ok_or_else(|| {
        Fault::bad_request(format!("an action body is exactly one {{\"<action>\": {{...}}}}; actions: {actions}"))
    })?;
    let arguments = match argument {
        Value::Object(arguments) => Some(arguments),
        Value::Null => None,
        _ => return Err(Fault::bad_request(format!("the arguments of {} must be an object or null", excerpt(name)))),
    };
    Ok((name.as_str(), Arguments { action: name, arguments }))
}

/// An action's arguments, as sent.
pub struct Arguments<'a> {
    action: &'a str,
    arguments: Option<&'a Map<String, Value>>,
}

impl<'a> Arguments<'a> {
    /// The arguments of an action that takes some: an object of the `allowed` keys only.
    pub fn with(&self, allowed: &[&str]) -> Result<&'a Map<String, Value>, Fault> {
        let arguments = self.arguments.ok_or_else(|| {
            Fault::bad_request(format!("{} needs its arguments: an object of {}", self.action, allowed.join(", ")))
        })?;
        check_keys(arguments, allowed, true)?;
        Ok(arguments)
    }
}

/// Refuses keys outside `allowed` when `strict` (Cinder's `additionalProperties: false`).
pub fn check_keys(map: &Map<String, Value>, allowed: &[&str], strict: bool) -> Result<(), Fault> {
    if !strict {
        return Ok(());
    }
    let mut unknown: Vec<&str> = map.keys().map(String::as_str).filter(|key| !allowed.contains(key)).collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort_unstable();
    Err(Fault::bad_request(format!(
        "additional properties are not allowed ({} unexpected); allowed: {}",
        unknown.join(", "),
        allowed.join(", ")
    )))
}

/// A string field, absent or null as `None`.
pub fn string(map: &Map<String, Value>, key: &str) -> Result<Option<String>, Fault> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(Fault::bad_request(format!("{key} must be a string"))),
    }
}

/// A positive whole number, or a string of digits only (Cinder's pattern `^[0-9]+$`: no sign, no
/// spaces), absent or null as `None`.
pub fn size(map: &Map<String, Value>, key: &str) -> Result<Option<u64>, Fault> {
    let invalid = || Fault::bad_request(format!("{key} must be a whole number of GiB from 1 to 1048576"));
    let number = match map.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(number)) => number.as_u64().ok_or_else(invalid)?,
        Some(Value::String(text)) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            text.parse::<u64>().map_err(|_| invalid())?
        }
        Some(_) => return Err(invalid()),
    };
    if number == 0 || number > 1 << 20 {
        return Err(invalid());
    }
    Ok(Some(number))
}

/// A boolean, or one of Cinder's boolean strings.
pub fn boolean(map: &Map<String, Value>, key: &str) -> Result<Option<bool>, Fault> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(value)) => Ok(Some(*value)),
        Some(Value::String(text)) => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "y" | "on" | "t" => Ok(Some(true)),
            "false" | "0" | "no" | "n" | "off" | "f" => Ok(Some(false)),
            _ => Err(Fault::bad_request(format!("{key} must be a boolean, not {}", basalt::error::excerpt(text)))),
        },
        Some(_) => Err(Fault::bad_request(format!("{key} must be a boolean"))),
    }
}

/// A map of strings (metadata, extra specs).
pub fn string_map(map: &Map<String, Value>, key: &str) -> Result<Option<HashMap<String, String>>, Fault> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(entries)) => entries
            .iter()
            .map(|(name, value)| match value {
                Value::String(text) => Ok((name.clone(), text.clone())),
                _ => Err(Fault::bad_request(format!("{key}.{name} must be a string"))),
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Some(_) => Err(Fault::bad_request(format!("{key} must be an object of strings"))),
    }
}

/// The value of `{"meta": {"<key>": "<value>"}}`, which must name exactly the URL's key.
pub fn meta_item(body: &Value, key: &str) -> Result<String, Fault> {
    let meta = map_body(body, "meta")?;
    match (meta.len(), meta.get(key)) {
        (1, Some(value)) => Ok(value.clone()),
        _ => Err(Fault::bad_request(format!(
            "the body must hold exactly the key {} of the url",
            basalt::error::excerpt(key)
        ))),
    }
}

/// A UUID field, checked here so the error names the field.
pub fn uuid(map: &Map<String, Value>, key: &str) -> Result<Option<String>, Fault> {
    let Some(text) = string(map, key)? else { return Ok(None) };
    uuid::Uuid::try_parse(&text)
        .map_err(|_| Fault::bad_request(format!("{key} {} is not a valid UUID", basalt::error::excerpt(&text))))?;
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sizes_are_checked() {
        let body = json!({"a": 1, "b": "2", "c": -1, "d": 0, "e": 1_048_577u64, "f": 1.5, "g": null,
                          "h": "  2 ", "i": "+3", "j": "", "k": "99999999999999999999999", "l": 2.0});
        let map = body.as_object().unwrap();
        assert_eq!(size(map, "a").unwrap(), Some(1));
        assert_eq!(size(map, "b").unwrap(), Some(2));
        for key in ["c", "d", "e", "f", "h", "i", "j", "k", "l"] {
            assert_eq!(size(map, key).unwrap_err().status, StatusCode::BAD_REQUEST, "{key}");
        }
        assert_eq!(size(map, "g").unwrap(), None);
    }

    #[test]
    fn strict_keys_name_the_unexpected_ones() {
        let body = json!({"size": 1, "colour": "red"});
        let error = check_keys(body.as_object().unwrap(), &["size"], true).unwrap_err();
        assert!(error.message.contains("colour unexpected"), "{}", error.message);
        assert!(check_keys(body.as_object().unwrap(), &["size"], false).is_ok());
    }
}
