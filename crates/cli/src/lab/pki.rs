//! The lab's etcd certificates: a CA, etcd's server certificate, one client certificate per agent (and one
//! for weftctl), in `<lab dir>/pki`, keys mode 0600. etcd runs with `--client-cert-auth`, so a pod, which
//! has none of these files, can neither read nor write the store. Generated once; `lab etcd start` and agent
//! restarts reuse them.
use super::state::LabState;
use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use weft_store::EtcdSecurityFiles;

pub fn dir(lab: &LabState) -> PathBuf {
    lab.dir().join("pki")
}

/// Whether the lab's store is etcd over TLS.
pub fn uses_tls(lab: &LabState) -> bool {
    lab.store_url.starts_with("etcds://")
}

fn write_key(path: &Path, pem: &str) -> Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(pem.as_bytes())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// The lab CA. Reloading needs only its key: a certificate re-made from the same name and key signs
/// certificates that the stored CA file verifies (same subject, same key identifier).
fn ca(lab: &LabState) -> Result<(rcgen::Certificate, KeyPair)> {
    let d = dir(lab);
    let (cert, key) = (d.join("ca.pem"), d.join("ca-key.pem"));
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, format!("weft lab {} etcd CA", lab.name));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    if cert.exists() && key.exists() {
        let k = KeyPair::from_pem(&std::fs::read_to_string(&key)?)?;
        return Ok((p.self_signed(&k)?, k));
    }
    std::fs::create_dir_all(&d)?;
    let k = KeyPair::generate()?;
    let c = p.self_signed(&k)?;
    write_key(&key, &k.serialize_pem())?;
    std::fs::write(&cert, c.pem())?;
    Ok((c, k))
}

/// `<name>.pem` and `<name>-key.pem` signed by the lab CA (created if missing), valid for `ips` as a server.
fn leaf(lab: &LabState, name: &str, ips: &[IpAddr]) -> Result<(PathBuf, PathBuf)> {
    let d = dir(lab);
    let (cert, key) = (d.join(format!("{name}.pem")), d.join(format!("{name}-key.pem")));
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let (ca_cert, ca_key) = ca(lab)?;
    let mut p = CertificateParams::new(vec!["localhost".to_string()])?;
    p.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let k = KeyPair::generate()?;
    let c = p.signed_by(&k, &ca_cert, &ca_key)?;
    write_key(&key, &k.serialize_pem())?;
    std::fs::write(&cert, c.pem())?;
    Ok((cert, key))
}

/// etcd's server certificate, for the address agents dial (from the store URL) and loopback.
pub fn server(lab: &LabState) -> Result<(PathBuf, PathBuf)> {
    let host = lab.store_url.split("://").nth(1).and_then(|r| r.split(':').next()).unwrap_or("127.0.0.1");
    let mut ips: Vec<IpAddr> = vec!["127.0.0.1".parse()?];
    ips.extend(host.parse::<IpAddr>().ok());
    leaf(lab, "etcd-server", &ips).context("etcd server certificate")
}

/// What a client (an agent `name`, or weftctl) passes to the store: the CA and its own certificate.
pub fn client(lab: &LabState, name: &str) -> Result<EtcdSecurityFiles> {
    let (cert, key) = leaf(lab, &format!("client-{name}"), &[]).context("etcd client certificate")?;
    Ok(EtcdSecurityFiles {
        ca_file: Some(dir(lab).join("ca.pem")),
        cert_file: Some(cert),
        key_file: Some(key),
        ..Default::default()
    })
}
