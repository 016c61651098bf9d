//! Secrets at rest: CHAP passwords are sealed (ChaCha20-Poly1305, a random nonce each) before
//! they reach the database, with a key that lives in a file of its own (0600), never in the
//! database. A sealed value names its key (`sealed:v1:<key id>:<base64 of nonce and
//! ciphertext>`), so a rotation can open values sealed with the previous key while it seals them
//! again with the new one. Values written before sealing existed (plain text) are read as they
//! are and sealed on the next rotation.

use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::Path,
    sync::{Arc, LazyLock},
};

use basalt::ServiceError;
use base64::{Engine, engine::general_purpose::STANDARD};
use ring::{
    aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};
use sha2::{Digest, Sha256};

const PREFIX: &str = "sealed:v1:";
const KEY_BYTES: usize = 32;

struct Key {
    id: String,
    key: LessSafeKey,
}

impl Key {
    fn new(bytes: &[u8]) -> Result<Self, ServiceError> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .map_err(|_| ServiceError::invalid(format!("a secret key is {KEY_BYTES} bytes")))?;
        let id = basalt::hex::encode(&Sha256::digest(bytes)[..4]);
        Ok(Self { id, key: LessSafeKey::new(unbound) })
    }
}

/// The key new secrets are sealed with, and the keys sealed secrets may be opened with.
pub struct SecretKeys {
    sealing: Key,
    previous: Vec<Key>,
}

/// The process's own key when none is configured (tests and in-process meshes): secrets sealed
/// with it are readable only by this process.
static EPHEMERAL: LazyLock<Arc<SecretKeys>> = LazyLock::new(|| {
    let mut bytes = [0u8; KEY_BYTES];
    SystemRandom::new().fill(&mut bytes).expect("the system's random source works");
    Arc::new(SecretKeys { sealing: Key::new(&bytes).expect("32 bytes"), previous: Vec::new() })
});

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("SecretKeys").field("sealing", &self.sealing.id).finish_non_exhaustive()
    }
}

impl SecretKeys {
    pub fn ephemeral() -> Arc<Self> {
        EPHEMERAL.clone()
    }

    /// The key in `path` (base64 of 32 bytes); with `create`, a new random key is written there
    /// (owner-only) when the file does not exist.
    pub fn from_file(path: &Path, create: bool) -> Result<Self, ServiceError> {
        if create && !path.exists() {
            let mut bytes = [0u8; KEY_BYTES];
            SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| ServiceError::internal("the system's random source failed"))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|error| ServiceError::internal(format!("cannot create {}: {error}", path.display())))?;
            writeln!(file, "{}", STANDARD.encode(bytes))
                .and_then(|()| file.sync_all())
                .map_err(|error| ServiceError::internal(format!("cannot write {}: {error}", path.display())))?;
        }
        Ok(Self { sealing: read_key(path)?, previous: Vec::new() })
    }

    /// These keys, also opening what `previous` sealed (a rotation).
    pub fn with_previous(mut self, previous: &Path) -> Result<Self, ServiceError> {
        self.previous.push(read_key(previous)?);
        Ok(self)
    }

    pub fn seal(&self, secret: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).expect("the system's random source works");
        let mut sealed = secret.as_bytes().to_vec();
        self.sealing
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.sealing.id.as_bytes()),
                &mut sealed,
            )
            .expect("sealing a short value cannot fail");
        let mut payload = nonce.to_vec();
        payload.extend(sealed);
        format!("{PREFIX}{}:{}", self.sealing.id, STANDARD.encode(payload))
    }

    /// The secret in `stored`: opened when sealed, as it is when it predates sealing.
    pub fn open(&self, stored: &str) -> Result<String, ServiceError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else { return Ok(stored.to_owned()) };
        let unreadable = |why: &str| ServiceError::internal(format!("a sealed secret cannot be opened: {why}"));
        let (id, payload) = rest.split_once(':').ok_or_else(|| unreadable("malformed"))?;
        let key = std::iter::once(&self.sealing)
            .chain(&self.previous)
            .find(|key| key.id == id)
            .ok_or_else(|| unreadable(&format!("it was sealed with key {id}, which this scheduler does not have")))?;
        let payload = STANDARD.decode(payload).map_err(|_| unreadable("malformed"))?;
        if payload.len() < NONCE_LEN {
            return Err(unreadable("malformed"));
        }
        let (nonce, sealed) = payload.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| unreadable("malformed"))?;
        let mut sealed = sealed.to_vec();
        let opened = key
            .key
            .open_in_place(nonce, Aad::from(id.as_bytes()), &mut sealed)
            .map_err(|_| unreadable("it does not authenticate"))?;
        String::from_utf8(opened.to_vec()).map_err(|_| unreadable("not text"))
    }

    /// Whether `stored` is sealed with the current key already.
    pub fn is_current(&self, stored: &str) -> bool {
        stored.strip_prefix(PREFIX).and_then(|rest| rest.split_once(':')).is_some_and(|(id, _)| id == self.sealing.id)
    }
}

/// Seals every stored secret with the current key: those sealed with a previous key (opened with
/// it) and those stored before sealing existed. Returns how many rows changed. Safe to repeat,
/// and to run while schedulers serve: each row is rewritten on its own.
pub async fn reseal(db: &sea_orm::DatabaseConnection, keys: &SecretKeys) -> Result<usize, ServiceError> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};

    use crate::db::{attachment, db_error, json::ConnectionInfo};

    let rows = attachment::Entity::find()
        .filter(attachment::Column::ConnectionInfo.is_not_null())
        .all(db)
        .await
        .map_err(db_error)?;
    let mut changed = 0;
    for row in rows {
        let Some(ConnectionInfo::Iscsi(mut iscsi)) = row.connection_info.clone() else { continue };
        if keys.is_current(&iscsi.auth_password) {
            continue;
        }
        let stored = iscsi.auth_password.clone();
        iscsi.auth_password = keys.seal(&keys.open(&stored)?);
        // Only if nobody changed the row meanwhile; a row changed since holds a fresh seal.
        let updated = attachment::Entity::update_many()
            .col_expr(attachment::Column::ConnectionInfo, Expr::value(ConnectionInfo::Iscsi(iscsi)))
            .filter(attachment::Column::Id.eq(row.id))
            .filter(attachment::Column::ConnectionInfo.eq(row.connection_info))
            .exec(db)
            .await
            .map_err(db_error)?;
        changed += updated.rows_affected as usize;
    }
    Ok(changed)
}

fn read_key(path: &Path) -> Result<Key, ServiceError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| ServiceError::invalid(format!("cannot read the secret key {}: {error}", path.display())))?;
    let bytes = STANDARD.decode(text.trim()).map_err(|_| {
        ServiceError::invalid(format!(
            "{}: a secret key file holds the base64 of {KEY_BYTES} random bytes",
            path.display()
        ))
    })?;
    if bytes.len() != KEY_BYTES {
        return Err(ServiceError::invalid(format!(
            "{}: a secret key file holds the base64 of {KEY_BYTES} random bytes, not {}",
            path.display(),
            bytes.len()
        )));
    }
    Key::new(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_with_their_key_only_and_name_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = SecretKeys::from_file(&dir.path().join("first.key"), true).unwrap();
        let sealed = first.seal("chap-password-1");
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("chap-password-1"));
        assert_ne!(sealed, first.seal("chap-password-1"), "a fresh nonce each time");
        assert_eq!(first.open(&sealed).unwrap(), "chap-password-1");
        assert_eq!(first.open("plain-from-before").unwrap(), "plain-from-before");

        let second = SecretKeys::from_file(&dir.path().join("second.key"), true).unwrap();
        let error = second.open(&sealed).unwrap_err();
        assert!(error.message.contains("does not have") && !error.message.contains("chap"), "{}", error.message);
        let rotating = SecretKeys::from_file(&dir.path().join("second.key"), false)
            .unwrap()
            .with_previous(&dir.path().join("first.key"))
            .unwrap();
        assert_eq!(rotating.open(&sealed).unwrap(), "chap-password-1");
        assert!(!rotating.is_current(&sealed) && rotating.is_current(&rotating.seal("x")));

        let mut tampered = sealed.clone();
        tampered.replace_range(sealed.len() - 4.., "AAAA");
        assert!(first.open(&tampered).is_err());
        let mode = std::fs::metadata(dir.path().join("first.key")).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    }

    #[test]
    fn key_files_must_hold_32_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.key");
        std::fs::write(&path, STANDARD.encode([1u8; 8])).unwrap();
        assert!(SecretKeys::from_file(&path, false).unwrap_err().message.contains("32 random bytes"));
    }
}
