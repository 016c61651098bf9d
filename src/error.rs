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
            Self::Conflict | Self::AlreadyExists => 409,
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
        match self.http_status() {
            400 => "badRequest",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "itemNotFound",
            409 => "conflictingRequest",
            413 => "overLimit",
            503 => "serviceUnavailable",
            _ => "computeFault",
        }
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

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServiceError {}

impl From<ServiceError> for tonic::Status {
    fn from(error: ServiceError) -> Self {
        tonic::Status::new(error.code.grpc_code(), error.message)
    }
}

impl From<tonic::Status> for ServiceError {
    fn from(status: tonic::Status) -> Self {
        Self::new(ErrorCode::from_grpc(status.code()), status.message().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorCode; 11] = [
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

    #[test]
    fn cinder_fault_names_follow_the_http_status() {
        assert_eq!(ErrorCode::NotFound.cinder_fault(), "itemNotFound");
        assert_eq!(ErrorCode::QuotaExceeded.cinder_fault(), "overLimit");
        assert_eq!(ErrorCode::Conflict.cinder_fault(), "conflictingRequest");
        assert_eq!(ErrorCode::InvalidArgument.cinder_fault(), "badRequest");
        assert_eq!(ErrorCode::Forbidden.cinder_fault(), "forbidden");
        assert_eq!(ErrorCode::Internal.cinder_fault(), "computeFault");
    }

    #[test]
    fn grpc_codes_survive_a_hop() {
        for code in ALL {
            let status: tonic::Status = ServiceError::new(code, "x").into();
            let back = ServiceError::from(status).code;
            // Two kinds share RESOURCE_EXHAUSTED; both keep their gRPC code through the hop.
            assert_eq!(back.grpc_code(), code.grpc_code(), "{code:?}");
        }
    }
}
