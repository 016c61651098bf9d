//! Errors in Cinder's fault format: `{"<faultName>": {"code": <status>, "message": "..."}}`, with the
//! status and fault name from the one error-code table.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use basalt::ServiceError;
use serde_json::json;

#[derive(Debug, Clone)]
pub struct Fault {
    pub status: StatusCode,
    pub message: String,
    /// Where to authenticate, on a 401 (`WWW-Authenticate`).
    pub www_authenticate: Option<String>,
}

impl Fault {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), www_authenticate: None }
    }

    pub fn with_www_authenticate(mut self, value: String) -> Self {
        self.www_authenticate = Some(value);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
}

impl From<ServiceError> for Fault {
    fn from(error: ServiceError) -> Self {
        let status = StatusCode::from_u16(error.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::new(status, error.message)
    }
}

impl From<tonic::Status> for Fault {
    fn from(status: tonic::Status) -> Self {
        // The scheduler unreachable is a gateway-side unavailability, not a client error.
        if matches!(status.code(), tonic::Code::Unavailable) && status.message().contains("transport") {
            return Self::new(StatusCode::SERVICE_UNAVAILABLE, "the volume service is unreachable; retry shortly");
        }
        // Unavailable too, but the request may have been applied before the break.
        if basalt::error::broke_during_the_call(&status) {
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the connection to the volume service broke during the call; check the resource before retrying",
            );
        }
        ServiceError::from(status).into()
    }
}

impl IntoResponse for Fault {
    fn into_response(self) -> Response {
        let name = basalt::error::cinder_fault_for_status(self.status.as_u16());
        let body = json!({ name: { "code": self.status.as_u16(), "message": self.message } });
        // No Retry-After, not even Cinder's `Retry-After: 0` on quota faults: a quota does not free
        // itself, and "retry at once" invites clients to hammer the server.
        let mut response = (self.status, Json(body)).into_response();
        if let Some(value) = self.www_authenticate.and_then(|value| HeaderValue::from_str(&value).ok()) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use basalt::ErrorCode;

    use super::*;

    #[test]
    fn quota_faults_are_over_limit_without_an_invitation_to_retry() {
        let fault: Fault = ServiceError::new(ErrorCode::QuotaExceeded, "quota exceeded for volumes").into();
        let response = fault.into_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(response.headers().get(axum::http::header::RETRY_AFTER).is_none());
        assert_eq!(ErrorCode::QuotaExceeded.cinder_fault(), "overLimit");
    }

    #[test]
    fn a_scheduler_lost_before_or_during_a_call_is_unavailable_not_internal() {
        for status in [tonic::Status::unavailable("transport error"), tonic::Status::unknown("transport error: reset")]
        {
            assert_eq!(Fault::from(status).status, StatusCode::SERVICE_UNAVAILABLE);
        }
        assert_eq!(Fault::from(tonic::Status::unknown("a bug")).status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
