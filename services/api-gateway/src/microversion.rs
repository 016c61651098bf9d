//! Microversions: `OpenStack-API-Version: volume 3.N` picks the wire format. Without the header
//! 3.0 applies; `latest` means the maximum; a version outside the range is 406. Every response to
//! a versioned request, errors included, echoes the version and adds `Vary`.

use std::fmt;

use axum::http::HeaderMap;

use crate::fault::Fault;

pub const HEADER: &str = "openstack-api-version";
const SERVICE: &str = "volume";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    pub minor: u16,
}

impl ApiVersion {
    pub const MIN: Self = Self { minor: 0 };
    pub const MAX: Self = Self { minor: 71 };

    pub const fn new(minor: u16) -> Self {
        Self { minor }
    }

    /// At or above `3.<minor>`.
    pub fn at_least(self, minor: u16) -> bool {
        self.minor >= minor
    }

    pub fn header_value(self) -> String {
        format!("{SERVICE} {self}")
    }
}

/// Cinder's answer to `what` asked at `version` below `3.<minor>`: not found.
pub fn version_needed(version: ApiVersion, minor: u16, what: &str) -> Result<(), Fault> {
    if version.at_least(minor) {
        return Ok(());
    }
    Err(Fault::not_found(format!("{what} needs microversion 3.{minor} or later; this request is at {version}")))
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "3.{}", self.minor)
    }
}

/// Why a requested version cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionError {
    /// Not of the form `3.N` or `latest` (400).
    Malformed(String),
    /// Outside the supported range (406).
    Unsupported(String),
}

/// The version a request asks for.
pub fn negotiate(headers: &HeaderMap) -> Result<ApiVersion, VersionError> {
    let Some(value) = headers.get(HEADER) else { return Ok(ApiVersion::MIN) };
    let text = value.to_str().map_err(|_| VersionError::Malformed("the version header is not text".into()))?;
    // Several services may be listed: "volume 3.5, compute 2.1". Ours is exactly "volume <version>".
    let Some(words) = text.split(',').find_map(|entry| {
        let words: Vec<&str> = entry.split_whitespace().collect();
        words.first().is_some_and(|service| service.eq_ignore_ascii_case(SERVICE)).then_some(words)
    }) else {
        return Ok(ApiVersion::MIN);
    };
    let requested = match words.as_slice() {
        [_, version] => (*version).to_owned(),
        _ => {
            return Err(VersionError::Malformed(format!(
                "invalid version header {}: use \"volume 3.N\" or \"volume latest\"",
                basalt::error::excerpt(text)
            )));
        }
    };
    if requested.eq_ignore_ascii_case("latest") {
        return Ok(ApiVersion::MAX);
    }
    let malformed = || {
        VersionError::Malformed(format!(
            "invalid microversion {}: use 3.N, or latest",
            basalt::error::excerpt(&requested)
        ))
    };
    let (major, minor) = requested.split_once('.').ok_or_else(malformed)?;
    let number = |text: &str| -> Result<u16, VersionError> {
        let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        if !digits {
            return Err(malformed());
        }
        text.parse().map_err(|_| malformed())
    };
    let (major, minor) = (number(major)?, number(minor)?);
    let version = ApiVersion::new(minor);
    if major != 3 || version > ApiVersion::MAX {
        return Err(VersionError::Unsupported(format!(
            "version {major}.{minor} is outside this api's range: the minimum is {} and the maximum is {}",
            ApiVersion::MIN,
            ApiVersion::MAX
        )));
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, value.parse().unwrap());
        headers
    }

    #[test]
    fn negotiation_follows_cinder() {
        assert_eq!(negotiate(&HeaderMap::new()), Ok(ApiVersion::new(0)));
        assert_eq!(negotiate(&headers("volume 3.27")), Ok(ApiVersion::new(27)));
        assert_eq!(negotiate(&headers("volume latest")), Ok(ApiVersion::MAX));
        assert_eq!(negotiate(&headers("compute 2.1, volume 3.44")), Ok(ApiVersion::new(44)));
        assert_eq!(negotiate(&headers("compute 2.1")), Ok(ApiVersion::MIN));
        assert!(matches!(negotiate(&headers("volume 3.72")), Err(VersionError::Unsupported(_))));
        assert!(matches!(negotiate(&headers("volume 2.0")), Err(VersionError::Unsupported(_))));
        assert!(matches!(negotiate(&headers("volume three")), Err(VersionError::Malformed(_))));
        for junk in ["volume 3.71 junk", "volume", "volume 3.+5", "volume 3.-1", "volume 3. 5"] {
            assert!(matches!(negotiate(&headers(junk)), Err(VersionError::Malformed(_))), "{junk:?}");
        }
        assert_eq!(ApiVersion::new(5).header_value(), "volume 3.5");
    }
}
