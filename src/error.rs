//! The one error-code table: every service error maps to a gRPC code, an HTTP status and the
//! Cinder fault name, so the gateway, the CSI plugin and gRPC clients all see the same verdict.

use std::fmt;

/// What kind of failure an error is. Each kind has exactly one gRPC code, HTTP status and Cinder
/// fault name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed or asks for something that is not allowed.
    InvalidArgument,
    /// The caller did not say who it is.
    Unauthenticated,
    /// The caller may not do this (e.g. a non-admin asking for an admin action).
    Forbidden,
    /// The resource does not exist, or belongs to another project.
    NotFound,
    /// The resource exists but its state forbids the operation (wrong status, has snapshots, ...).
    Conflict,
    /// A resource with this identity already exists with other arguments.
    AlreadyExists,
    /// A project quota would be exceeded.
    QuotaExceeded,
    /// No pool can hold the request.
    NoCapacity,
    /// A dependency (node, database) is unreachable for now; retrying later may work.
    Unavailable,
    /// A deadline passed before the operation finished.
    Timeout,
    /// A bug or an unexpected failure.
    Internal,
}

impl ErrorCode {
    pub const fn grpc_code(self) -> tonic::Code {
        match self {
            Self::InvalidArgument => tonic::Code::InvalidArgument,
            Self::Unauthenticated => tonic::Code::Unauthenticated,
            Self::Forbidden => tonic::Code::PermissionDenied,
            Self::NotFound => tonic::Code::NotFound,
            Self::Conflict => tonic::Code::FailedPrecondition,
            Self::AlreadyExists => tonic::Code::AlreadyExists,
            Self::QuotaExceeded | Self::NoCapacity => tonic::Code::ResourceExhausted,
            Self::Unavailable => tonic::Code::Unavailable,
            Self::Timeout => tonic::Code::DeadlineExceeded,
            Self::Internal => tonic::Code::Internal,
        }
    }

    pub const fn http_status(self) -> u16 {
        match self {
            Self::InvalidArgument => 400,
            Self::Unauthenticated => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            // Cinder answers a request in the wrong status with 400 (InvalidVolume, ...).
            Self::Conflict => 400,
            Self::AlreadyExists => 409,
            Self::QuotaExceeded => 413,
            // Cinder reports "No valid backend" as a 400 on synchronous paths.
            Self::NoCapacity => 400,
            Self::Unavailable => 503,
            Self::Timeout => 504,
            Self::Internal => 500,
        }
    }

    /// The key of Cinder's fault body, `{"<fault>": {"code": .., "message": ..}}`.
    pub const fn cinder_fault(self) -> &'static str {
        cinder_fault_for_status(self.http_status())
    }

    /// A stable name, carried across gRPC hops in the `x-basalt-error` metadata so that kinds
    /// sharing a gRPC code (quota exceeded, no capacity) stay apart.
    pub const fn name(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::AlreadyExists => "already_exists",
            Self::QuotaExceeded => "quota_exceeded",
            Self::NoCapacity => "no_capacity",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Internal => "internal",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        ALL_CODES.iter().copied().find(|code| code.name() == name)
    }

    /// The inverse of [`ErrorCode::grpc_code`], for errors that crossed a gRPC hop.
    pub const fn from_grpc(code: tonic::Code) -> Self {
        match code {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => Self::InvalidArgument,
            tonic::Code::Unauthenticated => Self::Unauthenticated,
            tonic::Code::PermissionDenied => Self::Forbidden,
            tonic::Code::NotFound => Self::NotFound,
            tonic::Code::FailedPrecondition | tonic::Code::Aborted => Self::Conflict,
            tonic::Code::AlreadyExists => Self::AlreadyExists,
            tonic::Code::ResourceExhausted => Self::NoCapacity,
            tonic::Code::Unavailable => Self::Unavailable,
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => Self::Timeout,
            _ => Self::Internal,
        }
    }
}

/// Cinder's fault name for an HTTP status (`api/openstack/wsgi.py::Fault`), also for statuses the
/// REST layer produces itself (405, 406, 415, ...).
pub const fn cinder_fault_for_status(status: u16) -> &'static str {
    match status {
        400 => "badRequest",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "itemNotFound",
        405 => "badMethod",
        406 => "notAcceptable",
        409 => "conflictingRequest",
        413 => "overLimit",
        415 => "badMediaType",
        501 => "notImplemented",
        503 => "serviceUnavailable",
        _ => "computeFault",
    }
}

const ALL_CODES: [ErrorCode; 11] = [
    ErrorCode::InvalidArgument,
    ErrorCode::Unauthenticated,
    ErrorCode::Forbidden,
    ErrorCode::NotFound,
    ErrorCode::Conflict,
    ErrorCode::AlreadyExists,
    ErrorCode::QuotaExceeded,
    ErrorCode::NoCapacity,
    ErrorCode::Unavailable,
    ErrorCode::Timeout,
    ErrorCode::Internal,
];

/// The gRPC metadata key that carries [`ErrorCode::name`].
pub const ERROR_KIND_METADATA: &str = "x-basalt-error";

/// An error with its code and a message for the caller: lowercase, says what was wrong and what is
/// allowed, never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    pub code: ErrorCode,
    pub message: String,
}

impl ServiceError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
}

/// How much of an untrusted input an error message quotes.
const EXCERPT_CHARS: usize = 40;

/// Quotes untrusted input for an error message: escaped, and cut to its first 40 characters
/// (saying how long it was) so a hostile value never fills a log line or a response.
pub fn excerpt(text: &str) -> String {
    let length = text.chars().count();
    if length <= EXCERPT_CHARS {
        return format!("{text:?}");
    }
    let head: String = text.chars().take(EXCERPT_CHARS).collect();
    format!("{head:?}... ({length} characters)")
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServiceError {}

/// Replaces every absolute path in `message` by its last component (`/srv/basalt/volume-1` becomes
/// `volume-1`): errors leave a process for callers who have no business knowing the host's layout.
pub fn redact_host_paths(message: &str) -> String {
    let mut redacted = String::with_capacity(message.len());
    for (index, word) in message.split(' ').enumerate() {
        if index > 0 {
            redacted.push(' ');
        }
        let start = word.find(|c: char| !matches!(c, '"' | '\'' | '(' | '[' | '`')).unwrap_or(word.len());
        let (opening, rest) = word.split_at(start);
        let end = rest.trim_end_matches(['"', '\'', ')', ']', '`', ',', ':', ';', '.']).len();
        let (path, closing) = rest.split_at(end);
        if path.len() > 1 && path.starts_with('/') {
            redacted.push_str(opening);
            redacted.push_str(path.rsplit('/').find(|name| !name.is_empty()).unwrap_or("<path>"));
            redacted.push_str(closing);
        } else {
            redacted.push_str(word);
        }
    }
    redacted
}

impl From<ServiceError> for tonic::Status {
    fn from(error: ServiceError) -> Self {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert(ERROR_KIND_METADATA, tonic::metadata::MetadataValue::from_static(error.code.name()));
        tonic::Status::with_metadata(error.code.grpc_code(), redact_host_paths(&error.message), metadata)
    }
}

/// Whether the connection to the peer broke during the call (the peer restarted): tonic reports it
/// as UNKNOWN with the transport error as its cause (or, relayed, its message). The peer is
/// unavailable, not faulty, and the request may have been applied before the break.
pub fn broke_during_the_call(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unknown
        && (std::error::Error::source(status).is_some() || status.message().starts_with("transport error"))
}

impl From<tonic::Status> for ServiceError {
    fn from(status: tonic::Status) -> Self {
        if broke_during_the_call(&status) {
            return Self::unavailable(format!("the connection broke during the call: {}", status.message()));
        }
        let code = status
            .metadata()
            .get(ERROR_KIND_METADATA)
            .and_then(|value| value.to_str().ok())
            .and_then(ErrorCode::from_name)
            .unwrap_or_else(|| ErrorCode::from_grpc(status.code()));
        Self::new(code, status.message().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorCode; 11] = ALL_CODES;

    #[test]
    fn cinder_fault_names_follow_the_http_status() {
        assert_eq!(ErrorCode::NotFound.cinder_fault(), "itemNotFound");
        assert_eq!(ErrorCode::QuotaExceeded.cinder_fault(), "overLimit");
        assert_eq!(ErrorCode::AlreadyExists.cinder_fault(), "conflictingRequest");
        assert_eq!(ErrorCode::Conflict.cinder_fault(), "badRequest");
        assert_eq!(ErrorCode::InvalidArgument.cinder_fault(), "badRequest");
        assert_eq!(ErrorCode::Forbidden.cinder_fault(), "forbidden");
        assert_eq!(ErrorCode::Internal.cinder_fault(), "computeFault");
    }

    #[test]
    fn a_connection_broken_during_a_call_is_unavailable_not_internal() {
        let broken = tonic::Status::from_error(Box::new(std::fmt::Error));
        assert_eq!(broken.code(), tonic::Code::Unknown);
        assert_eq!(ServiceError::from(broken).code, ErrorCode::Unavailable);
        assert_eq!(ServiceError::from(tonic::Status::unknown("a bug")).code, ErrorCode::Internal);
    }

    #[test]
    fn excerpts_escape_and_cut_long_input() {
        assert_eq!(excerpt("a\u{0}b"), "\"a\\0b\"");
        let long = "x".repeat(10_000);
        let quoted = excerpt(&long);
        assert!(quoted.len() < 80 && quoted.ends_with("(10000 characters)"), "{quoted}");
    }

    #[test]
    fn host_paths_never_leave_a_process() {
        let status: tonic::Status =
            ServiceError::internal("cannot open /srv/basalt/volumes/volume-1: entity not found").into();
        assert_eq!(status.message(), "cannot open volume-1: entity not found");
        assert_eq!(
            redact_host_paths("file \"/a/b/c\" (/d/e/), http://x/y and a/b"),
            "file \"c\" (e), http://x/y and a/b"
        );
        assert_eq!(redact_host_paths("/ alone stays"), "/ alone stays");
    }

    #[test]
    fn grpc_codes_survive_a_hop() {
        for code in ALL {
            let status: tonic::Status = ServiceError::new(code, "x").into();
            assert_eq!(status.code(), code.grpc_code());
            // Kinds sharing a gRPC code (quota exceeded, no capacity) stay apart across the hop.
            assert_eq!(ServiceError::from(status).code, code, "{code:?}");
        }
    }
}
