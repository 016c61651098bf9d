//! Identifier newtypes, so a volume id is never passed where a node id is expected, and every id
//! that reaches a file name, an object key or a NATS subject was parsed at the edge with a strict
//! grammar. Resource ids are UUIDs; project ids are Keystone's; node ids are operator-chosen names.

use std::{fmt, str::FromStr};

use uuid::Uuid;

use crate::{ServiceError, error::excerpt};

macro_rules! uuid_id {
    ($name:ident, $what:literal) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }

            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }

            /// Parses a client-supplied id, with an error that names the field.
            pub fn parse(text: &str) -> Result<Self, ServiceError> {
                text.parse()
            }
        }

        /// An id whose text is already known to be a UUID.
        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = ServiceError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Uuid::try_parse(text).map(Self).map_err(|_| {
                    ServiceError::invalid(format!(
                        concat!(
                            "invalid ",
                            $what,
                            " id {}: expected a UUID such as 3f2a6c1e-8d4b-4c2e-9a7f-0b1c2d3e4f50"
                        ),
                        excerpt(text)
                    ))
                })
            }
        }
    };
}

/// Ids travel in journal payloads as the text they show.
macro_rules! serde_as_text {
    ($($name:ident),*) => {$(
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                $name::parse(&text).map_err(|error| serde::de::Error::custom(error.message))
            }
        }
    )*};
}

uuid_id!(VolumeId, "volume");
uuid_id!(SnapshotId, "snapshot");
uuid_id!(BackupId, "backup");
uuid_id!(AttachmentId, "attachment");
uuid_id!(VolumeTypeId, "volume type");
uuid_id!(QosSpecsId, "qos specs");
uuid_id!(OperationId, "operation");
uuid_id!(TransferId, "transfer");
uuid_id!(MessageId, "message");
uuid_id!(GroupTypeId, "group type");
uuid_id!(GroupId, "group");
uuid_id!(GroupSnapshotId, "group snapshot");

/// A storage host's id, chosen by its operator (the host name by default): 1 to 64 characters of
/// letters, digits, '.', '_' and '-', starting with a letter or digit. That keeps it safe in NATS
/// subjects, file names and the `host@backend#pool` form, and never `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(String);

impl NodeId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn parse(text: &str) -> Result<Self, ServiceError> {
        let well_formed = text.len() <= 64
            && text.bytes().next().is_some_and(|first| first.is_ascii_alphanumeric())
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !well_formed {
            return Err(ServiceError::invalid(format!(
                "invalid node id {}: use 1 to 64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit",
                excerpt(text)
            )));
        }
        Ok(Self(text.to_owned()))
    }
}

/// A project (tenant) id in Keystone's form: 32 lowercase hexadecimal digits (what Keystone
/// generates), or a lowercase UUID with hyphens. Nothing else is accepted, so a project id can
/// never name another project's directory (`.`, `..`, `a/b`) nor alias one on a case-insensitive
/// store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectId(String);

/// What a project id looks like, for error messages.
pub const PROJECT_ID_GRAMMAR: &str = "32 lowercase hexadecimal digits (Keystone's form, e.g. \
    0123456789abcdef0123456789abcdef) or a lowercase UUID with hyphens";

impl ProjectId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn parse(text: &str) -> Result<Self, ServiceError> {
        let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        let keystone_hex = text.len() == 32 && text.bytes().all(lower_hex);
        let hyphenated = text.len() == 36
            && text.bytes().enumerate().all(|(index, b)| match index {
                8 | 13 | 18 | 23 => b == b'-',
                _ => lower_hex(b),
            });
        if !(keystone_hex || hyphenated) {
            return Err(ServiceError::invalid(format!(
                "invalid project id {}: a project id is {PROJECT_ID_GRAMMAR}",
                excerpt(text)
            )));
        }
        Ok(Self(text.to_owned()))
    }
}

macro_rules! display_as_str {
    ($($name:ident),*) => {$(
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}

display_as_str!(NodeId, ProjectId);
serde_as_text!(
    VolumeId,
    SnapshotId,
    BackupId,
    AttachmentId,
    VolumeTypeId,
    QosSpecsId,
    OperationId,
    NodeId,
    ProjectId,
    GroupId,
    GroupSnapshotId
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn volume_id_round_trips_and_rejects_garbage() {
        let id = VolumeId::new_random();
        assert_eq!(VolumeId::parse(&id.to_string()).unwrap(), id);
        let error = VolumeId::parse("not-a-uuid").unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        assert!(error.message.contains("invalid volume id"), "{}", error.message);
    }

    #[test]
    fn node_ids_keep_to_a_safe_alphabet() {
        assert!(NodeId::parse("node-1.rack_2").is_ok());
        for bad in ["", ".", "..", ".hidden", "-x", "a b", "a.>", "a*", "x@y", "p#q", "a/b", &"n".repeat(65)] {
            assert!(NodeId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn project_ids_are_keystone_ids_only() {
        for good in ["0123456789abcdef0123456789abcdef", "3f2a6c1e-8d4b-4c2e-9a7f-0b1c2d3e4f50"] {
            assert_eq!(ProjectId::parse(good).unwrap().as_str(), good);
        }
        let long = "a".repeat(300);
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "%2e%2e",
            "chunks",
            "demo",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcde\0",
            "0123456789abcdef0123456789abcdef0",
            "3f2a6c1e8-d4b-4c2e-9a7f-0b1c2d3e4f50",
            &long,
        ] {
            let error = ProjectId::parse(bad).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidArgument);
            assert!(error.message.contains("32 lowercase hexadecimal digits"), "{}", error.message);
            assert!(error.message.len() < 300, "the error quotes the whole input: {}", error.message);
        }
    }
}
