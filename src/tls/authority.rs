//! The mesh's own certificate authority: `basalt up` makes one in its data directory on first
//! start, `basalt certs` makes one for a deployment of separate services. Certificates are ECDSA
//! P-256, one DNS name each (the holder's [`Role`]), valid for a year; the CA for ten.

use std::{
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

use super::{MeshTls, Role, TlsFiles, verify_certificate};
use crate::ServiceError;

const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const CERTIFICATE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// A certificate this close to its end is issued again rather than kept.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

pub struct CertificateAuthority {
    key: KeyPair,
    certificate_pem: String,
}

/// A certificate and its key, PEM-encoded.
pub struct IssuedCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertificateAuthority {
    /// A new CA, in memory.
    pub fn create() -> Result<Self, ServiceError> {
        let key = KeyPair::generate().map_err(tls_error)?;
        let mut params = ca_params(&key);
        let now = SystemTime::now();
        // An hour's grace for hosts whose clocks run a little behind the issuer's.
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + CA_VALIDITY).into();
        let certificate_pem = params.self_signed(&key).map_err(tls_error)?.pem();
        Ok(Self { key, certificate_pem })
    }

    /// The CA kept in `dir` (`ca.pem`, `ca.key`), made there when it has none.
    pub fn open_or_create(dir: &Path) -> Result<Self, ServiceError> {
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        if !cert_path.exists() && !key_path.exists() {
            create_private_dir(dir)?;
            let authority = Self::create()?;
            write_file(&key_path, authority.key.serialize_pem().as_bytes(), true)?;
            write_file(&cert_path, authority.certificate_pem.as_bytes(), false)?;
            tracing::info!(dir = %dir.display(), "made a new certificate authority for the mesh");
            return Ok(authority);
        }
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|error| ServiceError::invalid(format!("cannot read {}: {error}", path.display())))
        };
        let certificate_pem = read(&cert_path)?;
        let key = KeyPair::from_pem(&read(&key_path)?)
            .map_err(|error| ServiceError::invalid(format!("{} is not a usable key: {error}", key_path.display())))?;
        // The issuer is rebuilt from the key (its name derives from it), so the pair must match.
        let certificate = rustls_pki_types::CertificateDer::from_pem_slice(certificate_pem.as_bytes());
        let matches = certificate.is_ok_and(|der| contains(der.as_ref(), key.public_key_raw()));
        if !matches {
            return Err(ServiceError::invalid(format!(
                "{} and {} are not a pair: restore the right files, or move both aside to make a new CA",
                cert_path.display(),
                key_path.display()
            )));
        }
        Ok(Self { key, certificate_pem })
    }

    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// A new certificate and key for `role`, usable to serve and to call.
    pub fn issue(&self, role: &Role) -> Result<IssuedCertificate, ServiceError> {
        let key = KeyPair::generate().map_err(tls_error)?;
        let mut params = CertificateParams::new(vec![role.dns_name()]).map_err(tls_error)?;
        params.distinguished_name.push(DnType::CommonName, format!("basalt {}", role.file_stem()));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + CERTIFICATE_VALIDITY).into();
        let issuer = Issuer::new(ca_params(&self.key), &self.key);
        let certificate = params.signed_by(&key, &issuer).map_err(tls_error)?;
        Ok(IssuedCertificate { cert_pem: certificate.pem(), key_pem: key.serialize_pem() })
    }

    /// A certificate for `role`, issued and loaded in memory (an in-process mesh's).
    pub fn mesh_tls(&self, role: Role) -> Result<MeshTls, ServiceError> {
        let issued = self.issue(&role)?;
        MeshTls::from_pem(self.certificate_pem.as_bytes(), issued.cert_pem.as_bytes(), issued.key_pem.as_bytes(), role)
    }

    /// `role`'s certificate from `dir`, loaded, after [`Self::ensure`] made it sound.
    pub fn ensure_loaded(&self, dir: &Path, role: Role) -> Result<MeshTls, ServiceError> {
        MeshTls::load(&self.ensure(dir, &role)?, role)
    }

    /// `role`'s files in `dir`: kept when they verify against this CA for another 30 days, issued
    /// (again) otherwise. The key is written owner-only.
    pub fn ensure(&self, dir: &Path, role: &Role) -> Result<TlsFiles, ServiceError> {
        let files = TlsFiles::in_dir(dir, role);
        let still_good = |at: SystemTime| {
            let (Ok(cert), true) = (std::fs::read(&files.cert), files.key.exists()) else { return false };
            verify_certificate(self.certificate_pem.as_bytes(), &cert, role, at).is_ok()
        };
        if still_good(SystemTime::now() + RENEW_BEFORE) {
            return Ok(files);
        }
        let issued = self.issue(role)?;
        write_file(&files.key, issued.key_pem.as_bytes(), true)?;
        write_file(&files.cert, issued.cert_pem.as_bytes(), false)?;
        if !still_good(SystemTime::now() + RENEW_BEFORE) {
            tracing::warn!(ca = %files.ca.display(), "the mesh CA expires within 30 days: make a new one and reissue every certificate");
        }
        tracing::info!(role = %role, cert = %files.cert.display(), "issued a mesh certificate");
        Ok(files)
    }
}

/// The CA's parameters, all derived from its key, so an issuer can be rebuilt from the key alone
/// (rcgen reads no certificate without an X.509 parser this project does not otherwise need).
fn ca_params(key: &KeyPair) -> CertificateParams {
    let fingerprint = crate::hex::encode(&Sha256::digest(key.public_key_raw())[..8]);
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, format!("Basalt mesh CA {fingerprint}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|window| window == needle)
}

fn tls_error(error: rcgen::Error) -> ServiceError {
    ServiceError::internal(format!("cannot make a mesh certificate: {error}"))
}

fn create_private_dir(dir: &Path) -> Result<(), ServiceError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| ServiceError::invalid(format!("cannot create {}: {error}", dir.display())))
}

/// Writes `path` whole through a temporary file and a rename, so a reader never sees half of it;
/// `private` files are owner-only from their first byte.
fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), ServiceError> {
    let failed = |error: std::io::Error| ServiceError::internal(format!("cannot write {}: {error}", path.display()));
    let temporary = PathBuf::from(format!("{}.tmp", path.display()));
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&temporary)
        .map_err(failed)?;
    file.write_all(contents).and_then(|()| file.sync_all()).map_err(failed)?;
    std::fs::rename(&temporary, path).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopened_ca_issues_certificates_its_peers_accept() {
        let dir = tempfile_dir();
        let first = CertificateAuthority::open_or_create(&dir).expect("a new CA");
        let files = first.ensure(&dir, &Role::Gateway).expect("the gateway's files");
        let reopened = CertificateAuthority::open_or_create(&dir).expect("the same CA");
        assert_eq!(first.certificate_pem(), reopened.certificate_pem());
        let scheduler = reopened.ensure(&dir, &Role::Scheduler).expect("the scheduler's files");
        assert!(MeshTls::load(&files, Role::Gateway).is_ok());
        assert!(MeshTls::load(&scheduler, Role::Scheduler).is_ok());
        let mode = std::fs::metadata(&scheduler.key).expect("the key").permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        // Kept while valid: a second ensure leaves the files alone.
        let before = std::fs::read(&files.cert).expect("the certificate");
        reopened.ensure(&dir, &Role::Gateway).expect("the gateway's files again");
        assert_eq!(before, std::fs::read(&files.cert).expect("the certificate"));
        // Another CA's key beside this CA's certificate is refused, not silently used.
        std::fs::write(dir.join("ca.key"), CertificateAuthority::create().expect("a CA").key.serialize_pem())
            .expect("replace the key");
        let mismatch = CertificateAuthority::open_or_create(&dir).err().expect("a mismatched pair is refused");
        assert!(mismatch.message.contains("are not a pair"), "{}", mismatch.message);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("basalt-ca-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        dir
    }
}
