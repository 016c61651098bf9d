//! The JSON columns: string maps (metadata, extra specs, QoS specs), a host's connector, and the
//! connection info an attachment hands out. Each is a type here, read and written by serde, so a
//! row holds exactly what the type allows and the code never handles the JSON text.

use std::collections::{BTreeMap, HashMap};

use basalt::proto;
use sea_orm::FromJsonQueryResult;
use serde::{Deserialize, Serialize};

/// A map of strings, kept as a JSON object with sorted keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, FromJsonQueryResult)]
#[serde(transparent)]
pub struct StringMap(pub BTreeMap<String, String>);

impl StringMap {
    pub fn to_hash_map(&self) -> HashMap<String, String> {
        self.0.iter().map(|(key, value)| (key.clone(), value.clone())).collect()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

impl From<HashMap<String, String>> for StringMap {
    fn from(map: HashMap<String, String>) -> Self {
        Self(map.into_iter().collect())
    }
}

impl From<&HashMap<String, String>> for StringMap {
    fn from(map: &HashMap<String, String>) -> Self {
        Self(map.iter().map(|(key, value)| (key.clone(), value.clone())).collect())
    }
}

/// A list of ids (a group's volume types), kept as a JSON array of strings in the order given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, FromJsonQueryResult)]
#[serde(transparent)]
pub struct IdList(pub Vec<String>);

/// What a host told us about itself when it connected (os-brick's connector properties).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, FromJsonQueryResult)]
pub struct Connector {
    pub initiator: String,
    pub ip: String,
    pub host: String,
    pub platform: String,
    pub os_type: String,
    pub multipath: bool,
    pub do_local_attach: bool,
}

impl From<&proto::Connector> for Connector {
    fn from(connector: &proto::Connector) -> Self {
        Self {
            initiator: connector.initiator.clone(),
            ip: connector.ip.clone(),
            host: connector.host.clone(),
            platform: connector.platform.clone(),
            os_type: connector.os_type.clone(),
            multipath: connector.multipath,
            do_local_attach: connector.do_local_attach,
        }
    }
}

impl From<&Connector> for proto::Connector {
    fn from(connector: &Connector) -> Self {
        Self {
            initiator: connector.initiator.clone(),
            ip: connector.ip.clone(),
            host: connector.host.clone(),
            platform: connector.platform.clone(),
            os_type: connector.os_type.clone(),
            multipath: connector.multipath,
            do_local_attach: connector.do_local_attach,
            extra: HashMap::new(),
        }
    }
}

/// Cinder's `connection_info`: `driver_volume_type` and its `data`, one shape per kind. It holds
/// an iSCSI export's CHAP secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, FromJsonQueryResult)]
#[serde(tag = "driver_volume_type", content = "data", rename_all = "lowercase")]
pub enum ConnectionInfo {
    Iscsi(IscsiConnection),
    Nfs(NfsConnection),
    Local(LocalConnection),
}

/// As `cinder/volume/targets/iscsi.py::_get_iscsi_properties` builds it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IscsiConnection {
    pub target_discovered: bool,
    pub target_iqn: String,
    pub target_portal: String,
    pub target_lun: u32,
    pub volume_id: String,
    pub auth_method: String,
    pub auth_username: String,
    pub auth_password: String,
    pub encrypted: bool,
    pub access_mode: String,
    pub discard: bool,
    pub cacheable: bool,
}

/// As `cinder/volume/drivers/remotefs.py::initialize_connection` builds it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NfsConnection {
    pub export: String,
    pub name: String,
    pub format: String,
    pub volume_id: String,
    pub access_mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<String>,
}

/// As os-brick's local connector takes it: the device or file on the volume's own host.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalConnection {
    pub device_path: String,
    pub volume_id: String,
    pub access_mode: String,
}

/// Never prints the CHAP secret.
impl std::fmt::Debug for ConnectionInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Iscsi(iscsi) => f
                .debug_struct("Iscsi")
                .field("target_iqn", &iscsi.target_iqn)
                .field("target_portal", &iscsi.target_portal)
                .field("target_lun", &iscsi.target_lun)
                .field("auth_username", &iscsi.auth_username)
                .finish_non_exhaustive(),
            Self::Nfs(nfs) => f.debug_struct("Nfs").field("export", &nfs.export).field("name", &nfs.name).finish(),
            Self::Local(local) => f.debug_struct("Local").field("device_path", &local.device_path).finish(),
        }
    }
}

impl From<&ConnectionInfo> for proto::ConnectionInfo {
    fn from(info: &ConnectionInfo) -> Self {
        use proto::connection_info::Target;
        let (kind, volume_id, access_mode, target) = match info {
            ConnectionInfo::Iscsi(iscsi) => (
                "iscsi",
                &iscsi.volume_id,
                &iscsi.access_mode,
                Target::Iscsi(proto::IscsiTarget {
                    target_iqn: iscsi.target_iqn.clone(),
                    target_portal: iscsi.target_portal.clone(),
                    target_lun: iscsi.target_lun,
                    target_discovered: iscsi.target_discovered,
                    auth_method: iscsi.auth_method.clone(),
                    auth_username: iscsi.auth_username.clone(),
                    auth_password: iscsi.auth_password.clone(),
                    encrypted: iscsi.encrypted,
                    discard: iscsi.discard,
                    cacheable: iscsi.cacheable,
                }),
            ),
            ConnectionInfo::Nfs(nfs) => (
                "nfs",
                &nfs.volume_id,
                &nfs.access_mode,
                Target::Nfs(proto::NfsShare {
                    export: nfs.export.clone(),
                    name: nfs.name.clone(),
                    format: nfs.format.clone(),
                    options: nfs.options.clone(),
                }),
            ),
            ConnectionInfo::Local(local) => (
                "local",
                &local.volume_id,
                &local.access_mode,
                Target::Local(proto::LocalDevice { device_path: local.device_path.clone() }),
            ),
        };
        Self {
            driver_volume_type: kind.into(),
            volume_id: volume_id.clone(),
            access_mode: access_mode.clone(),
            target: Some(target),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_info_keeps_cinder_s_shape() {
        let info = ConnectionInfo::Local(LocalConnection {
            device_path: "/dev/loop3".into(),
            volume_id: "v".into(),
            access_mode: "rw".into(),
        });
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"driver_volume_type": "local", "data": {"device_path": "/dev/loop3", "volume_id": "v", "access_mode": "rw"}})
        );
        assert_eq!(serde_json::from_value::<ConnectionInfo>(json).unwrap(), info);
    }

    #[test]
    fn debug_output_never_shows_the_chap_secret() {
        let info = ConnectionInfo::Iscsi(IscsiConnection {
            target_discovered: false,
            target_iqn: "iqn".into(),
            target_portal: "p".into(),
            target_lun: 1,
            volume_id: "v".into(),
            auth_method: "CHAP".into(),
            auth_username: "user".into(),
            auth_password: "s3cret-password".into(),
            encrypted: false,
            access_mode: "rw".into(),
            discard: false,
            cacheable: false,
        });
        assert!(!format!("{info:?}").contains("s3cret"));
    }
}
