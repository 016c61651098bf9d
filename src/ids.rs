//! Identifier newtypes, so a volume id is never passed where a node id is expected. Resource ids are
//! UUIDs; node and project ids are operator- or token-chosen strings with a checked alphabet.

use std::{fmt, str::FromStr};

use uuid::Uuid;

use crate::ServiceError;

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
                            " id {:?}: expected a UUID such as 3f2a6c1e-8d4b-4c2e-9a7f-0b1c2d3e4f50"
                        ),
                        text
                    ))
                })
            }
        }
    };
}

uuid_id!(VolumeId, "volume");
uuid_id!(SnapshotId, "snapshot");
uuid_id!(BackupId, "backup");
uuid_id!(AttachmentId, "attachment");
uuid_id!(VolumeTypeId, "volume type");

macro_rules! name_id {
    ($name:ident, $what:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Accepts 1 to 64 characters of `[A-Za-z0-9._-]`, which keeps the id safe in NATS
            /// subjects, file names and the `host@backend#pool` form.
            pub fn parse(text: &str) -> Result<Self, ServiceError> {
                let well_formed = !text.is_empty()
                    && text.len() <= 64
                    && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
                if !well_formed {
                    return Err(ServiceError::invalid(format!(
                        concat!(
                            "invalid ",
                            $what,
                            " id {:?}: use 1 to 64 characters of letters, digits, '.', '_' or '-'"
                        ),
                        text
                    )));
                }
                Ok(Self(text.to_owned()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_id!(NodeId, "node");
name_id!(ProjectId, "project");

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
        for bad in ["", "a b", "a.>", "a*", "x@y", "p#q", &"n".repeat(65)] {
            assert!(NodeId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
