//! Throwaway certificates for TLS tests: a CA, a server certificate for loopback, client certificates.
//! Keys are written with mode 0600, as an operator's would be.
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: PathBuf,
    pub server: CertFiles,
    pub client: CertFiles,
    /// Signed by another CA: etcd must refuse it.
    pub stranger: CertFiles,
}

fn write(dir: &Path, name: &str, cert: &rcgen::Certificate, key: &KeyPair) -> CertFiles {
    let files = CertFiles { cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}-key.pem")) };
    std::fs::write(&files.cert, cert.pem()).expect("write cert");
    std::fs::write(&files.key, key.serialize_pem()).expect("write key");
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
    files
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().expect("ca key");
    (p.self_signed(&key).expect("ca cert"), key)
}

fn leaf(cn: &str, ips: &[IpAddr], ca: &(rcgen::Certificate, KeyPair)) -> (rcgen::Certificate, KeyPair) {
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    p.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().expect("key");
    (p.signed_by(&key, &ca.0, &ca.1).expect("sign"), key)
}

/// Generates a CA, a server certificate valid for `ips`, a client certificate, and a stranger's certificate.
pub fn generate(dir: &Path, ips: &[IpAddr]) -> Pki {
    std::fs::create_dir_all(dir).expect("pki dir");
    let authority = ca("weft test CA");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, authority.0.pem()).expect("write ca");
    let (s, sk) = leaf("etcd", ips, &authority);
    let (c, ck) = leaf("weft-agent", &[], &authority);
    let other = ca("someone else's CA");
    let (x, xk) = leaf("stranger", &[], &other);
    Pki {
        ca: ca_path,
        server: write(dir, "server", &s, &sk),
        client: write(dir, "client", &c, &ck),
        stranger: write(dir, "stranger", &x, &xk),
    }
}
