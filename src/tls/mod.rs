//! Mutual TLS inside the mesh: every gRPC hop (gateway → scheduler, CSI → scheduler, scheduler →
//! node) runs over TLS with a certificate on both ends, issued by the deployment's own CA. A
//! certificate's DNS name says what its holder is (a [`Role`]): servers admit only the roles that
//! may call them, and the scheduler dials a node only under the name the node's id gives, so a
//! forged capacity report cannot send it elsewhere.

mod authority;

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use sha2::{Digest, Sha256};
use tonic::{
    Request, Status,
    service::Interceptor,
    transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig},
};
use webpki::{EndEntityCert, KeyUsage};

pub use authority::CertificateAuthority;

use crate::{ServiceError, ids::NodeId};

/// The private DNS domain of mesh names (`.internal` is reserved for private use, never resolved).
const DOMAIN: &str = "basalt.internal";

/// What a mesh certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    Gateway,
    Scheduler,
    Csi,
    Node(NodeId),
}

impl Role {
    /// The DNS name a certificate for this role carries as its subject alternative name.
    pub fn dns_name(&self) -> String {
        match self {
            Role::Gateway => format!("gateway.{DOMAIN}"),
            Role::Scheduler => format!("scheduler.{DOMAIN}"),
            Role::Csi => format!("csi.{DOMAIN}"),
            Role::Node(node_id) => format!("{}.node.{DOMAIN}", node_label(node_id)),
        }
    }

    /// The file names of this role's certificate and key in a TLS directory: `<stem>.pem`,
    /// `<stem>.key`.
    pub fn file_stem(&self) -> String {
        match self {
            Role::Gateway => "gateway".into(),
            Role::Scheduler => "scheduler".into(),
            Role::Csi => "csi".into(),
            Role::Node(node_id) => format!("node-{node_id}"),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Gateway => f.write_str("the REST gateway"),
            Role::Scheduler => f.write_str("the scheduler"),
            Role::Csi => f.write_str("the CSI plugin"),
            Role::Node(node_id) => write!(f, "volume node {node_id}"),
        }
    }
}

/// A DNS label for a node id. Node ids allow what DNS names do not (`_`, `..`, upper case, which
/// DNS folds), so the label is a digest of the id: one id, one name, always valid.
fn node_label(node_id: &NodeId) -> String {
    crate::hex::encode(&Sha256::digest(node_id.as_str().as_bytes())[..16])
}

/// Where a service's CA certificate, own certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files of `role` in a directory laid out as `basalt certs` and `basalt up` write it.
    pub fn in_dir(dir: &Path, role: &Role) -> Self {
        let stem = role.file_stem();
        Self { ca: dir.join("ca.pem"), cert: dir.join(format!("{stem}.pem")), key: dir.join(format!("{stem}.key")) }
    }
}

/// A service's place in the mesh: its certificate and key, and the CA it trusts peers by.
#[derive(Clone)]
pub struct MeshTls {
    inner: Arc<Loaded>,
}

struct Loaded {
    role: Role,
    ca: Certificate,
    identity: Identity,
}

impl fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshTls").field("role", &self.inner.role).finish_non_exhaustive()
    }
}

impl MeshTls {
    /// Reads `files` and checks them: the certificate chains to the CA, is valid now, and names
    /// `role`. A service refuses to start on anything else rather than fail at its first call.
    pub fn load(files: &TlsFiles, role: Role) -> Result<Self, ServiceError> {
        let read = |path: &Path, what: &str| {
            std::fs::read(path).map_err(|error| {
                ServiceError::invalid(format!("cannot read the mesh {what} {}: {error}", path.display()))
            })
        };
        let ca = read(&files.ca, "CA certificate")?;
        let cert = read(&files.cert, "certificate")?;
        let key = read(&files.key, "key")?;
        Self::from_pem(&ca, &cert, &key, role).map_err(|error| {
            ServiceError::invalid(format!("{} (CA {}): {}", files.cert.display(), files.ca.display(), error.message))
        })
    }

    pub fn from_pem(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8], role: Role) -> Result<Self, ServiceError> {
        verify_certificate(ca_pem, cert_pem, &role, SystemTime::now()).map_err(ServiceError::invalid)?;
        if rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem).is_err() {
            return Err(ServiceError::invalid("the key file holds no PEM private key"));
        }
        Ok(Self {
            inner: Arc::new(Loaded {
                role,
                ca: Certificate::from_pem(ca_pem),
                identity: Identity::from_pem(cert_pem, key_pem),
            }),
        })
    }

    pub fn role(&self) -> &Role {
        &self.inner.role
    }

    /// A server that presents this certificate and requires one from every client, issued by the
    /// mesh's CA; a handshake not done within `handshake_timeout` is dropped.
    pub fn server_config(&self, handshake_timeout: Duration) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.inner.identity.clone())
            .client_ca_root(self.inner.ca.clone())
            .timeout(handshake_timeout)
    }

    /// A client that presents this certificate and accepts only a server whose certificate, from
    /// the mesh's CA, names `server`, whatever address it was reached at.
    pub fn client_config(&self, server: &Role) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.inner.ca.clone())
            .identity(self.inner.identity.clone())
            .domain_name(server.dns_name())
    }
}

/// Checks that `cert_pem` chains to `ca_pem`, is valid at `at` for both ends of a connection
/// (every mesh certificate serves and calls), and names `role`.
fn verify_certificate(ca_pem: &[u8], cert_pem: &[u8], role: &Role, at: SystemTime) -> Result<(), String> {
    let ca = CertificateDer::from_pem_slice(ca_pem).map_err(|_| "the CA file holds no PEM certificate".to_owned())?;
    let cert = CertificateDer::from_pem_slice(cert_pem)
        .map_err(|_| "the certificate file holds no PEM certificate".to_owned())?;
    let anchor =
        webpki::anchor_from_trusted_cert(&ca).map_err(|error| format!("the CA certificate is unusable: {error}"))?;
    let leaf = EndEntityCert::try_from(&cert).map_err(|error| format!("the certificate is unusable: {error}"))?;
    let since_epoch = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    for usage in [KeyUsage::server_auth(), KeyUsage::client_auth()] {
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            std::slice::from_ref(&anchor),
            &[],
            UnixTime::since_unix_epoch(since_epoch),
            usage,
            None,
            None,
        )
        .map_err(|error| format!("the certificate does not verify against the CA: {error}"))?;
    }
    if !names_role(&leaf, role) {
        return Err(format!("the certificate is not one for {role} (it must name {})", role.dns_name()));
    }
    Ok(())
}

fn names_role(cert: &EndEntityCert<'_>, role: &Role) -> bool {
    ServerName::try_from(role.dns_name()).is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
}

/// A gRPC interceptor that lets a call through only when the peer's certificate (already verified
/// against the mesh's CA in the handshake) names one of `roles`.
#[derive(Clone)]
pub struct AdmitPeers {
    /// The names the admitted roles' certificates carry, worked out once: every call checks them.
    names: Arc<[ServerName<'static>]>,
    /// The admitted roles, for the refusal's message.
    described: Arc<str>,
}

impl AdmitPeers {
    pub fn only(roles: &[Role]) -> Self {
        let names = roles.iter().filter_map(|role| ServerName::try_from(role.dns_name()).ok()).collect();
        let described = roles.iter().map(Role::to_string).collect::<Vec<_>>().join(" or ");
        Self { names, described: described.into() }
    }
}

impl Interceptor for AdmitPeers {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(chain) = request.peer_certs() else {
            return Err(Status::unauthenticated("this service answers only callers with a mesh certificate"));
        };
        let leaf = chain.first().and_then(|cert| EndEntityCert::try_from(cert).ok());
        let admitted =
            leaf.is_some_and(|leaf| self.names.iter().any(|name| leaf.verify_is_valid_for_subject_name(name).is_ok()));
        if !admitted {
            return Err(Status::permission_denied(format!(
                "this service answers only {}; the caller's certificate names none of them",
                self.described
            )));
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> Role {
        Role::Node(NodeId::parse(id).expect("a valid node id"))
    }

    #[test]
    fn every_node_id_gets_its_own_valid_dns_name() {
        let ids = ["a", "A", "vm_1", "host..name", "x".repeat(64).as_str(), "node-0"].map(node);
        let names: std::collections::HashSet<String> = ids.iter().map(Role::dns_name).collect();
        assert_eq!(names.len(), ids.len(), "two node ids share a name: {names:?}");
        for name in &names {
            assert!(ServerName::try_from(name.as_str()).is_ok(), "{name} is not a DNS name");
        }
    }

    #[test]
    fn a_certificate_is_accepted_only_for_its_own_role_and_ca() {
        let authority = CertificateAuthority::create().expect("a CA");
        let other = CertificateAuthority::create().expect("another CA");
        let issued = authority.issue(&node("vm-1")).expect("a node certificate");
        let now = SystemTime::now();
        let ca = authority.certificate_pem().as_bytes();
        assert_eq!(verify_certificate(ca, issued.cert_pem.as_bytes(), &node("vm-1"), now), Ok(()));
        let wrong_role = verify_certificate(ca, issued.cert_pem.as_bytes(), &node("vm-2"), now);
        assert!(wrong_role.is_err_and(|error| error.contains("volume node vm-2")));
        let wrong_ca =
            verify_certificate(other.certificate_pem().as_bytes(), issued.cert_pem.as_bytes(), &node("vm-1"), now);
        assert!(wrong_ca.is_err_and(|error| error.contains("does not verify")));
        let expired = now + Duration::from_secs(2 * 365 * 24 * 3600);
        assert!(verify_certificate(ca, issued.cert_pem.as_bytes(), &node("vm-1"), expired).is_err());
        assert!(MeshTls::from_pem(ca, issued.cert_pem.as_bytes(), issued.key_pem.as_bytes(), node("vm-1")).is_ok());
        assert!(MeshTls::from_pem(ca, issued.cert_pem.as_bytes(), b"no key", node("vm-1")).is_err());
    }
}
