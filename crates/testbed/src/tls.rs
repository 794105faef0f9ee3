//! Real X.509 material for TLS tests: CAs, node certificates valid for 127.0.0.1, ::1 and
//! localhost (server and client use), expired ones, and a key that belongs to another
//! certificate. Written as PEM files in a directory, as an operator's would be.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// A certificate authority whose certificate is `<dir>/<name>-ca.pem`.
pub struct TestCa {
    name: String,
    dir: PathBuf,
    cert_path: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    next_serial: u64,
}

/// One certificate with its key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Serial number, unique within its CA.
    pub serial: u64,
}

impl TestCa {
    /// A new CA (fresh key) valid from yesterday for ten years.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("raftpoll test CA {name}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(3650);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        let cert_path = dir.join(format!("{name}-ca.pem"));
        fs::write(&cert_path, cert.pem()).expect("write CA certificate");
        TestCa {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            cert_path,
            issuer: Issuer::new(params, key),
            next_serial: 1,
        }
    }

    /// The CA certificate (PEM): what `ca_file` / `--ca` point to.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// A node certificate for `name`, valid now for a year.
    pub fn issue(&mut self, name: &str) -> CertFiles {
        let now = OffsetDateTime::now_utc();
        self.issue_valid(name, now - Duration::hours(1), now + Duration::days(365))
    }

    /// A node certificate for `name` that expired yesterday.
    pub fn issue_expired(&mut self, name: &str) -> CertFiles {
        let now = OffsetDateTime::now_utc();
        self.issue_valid(name, now - Duration::days(30), now - Duration::days(1))
    }

    fn issue_valid(
        &mut self,
        name: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> CertFiles {
        let names = vec![
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "localhost".to_string(),
        ];
        let mut params = CertificateParams::new(names).expect("node params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        let serial = self.next_serial;
        self.next_serial += 1;
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().expect("node key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign node cert");
        let stem = format!("{}-{name}-{serial}", self.name);
        let files = CertFiles {
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}.key")),
            serial,
        };
        fs::write(&files.cert, cert.pem()).expect("write certificate");
        fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }
}

/// `cert`'s certificate with `other`'s key: a pair that does not belong together.
pub fn mismatched(cert: &CertFiles, other: &CertFiles) -> CertFiles {
    CertFiles {
        cert: cert.cert.clone(),
        key: other.key.clone(),
        serial: cert.serial,
    }
}

/// What a node's `[tls]` section and the CLI's `--ca/--cert/--key` point to.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `client_auth = "required"` (mutual TLS) on the node.
    pub mutual: bool,
}

impl TlsFiles {
    pub fn new(ca: &TestCa, cert: &CertFiles, mutual: bool) -> TlsFiles {
        TlsFiles {
            ca: ca.cert_path().to_path_buf(),
            cert: cert.cert.clone(),
            key: cert.key.clone(),
            mutual,
        }
    }

    /// The `[tls]` table of a node config.
    pub fn to_table(&self) -> toml::Table {
        let mut t = toml::Table::new();
        let s = |p: &Path| toml::Value::String(p.display().to_string());
        t.insert("cert_file".into(), s(&self.cert));
        t.insert("key_file".into(), s(&self.key));
        t.insert("ca_file".into(), s(&self.ca));
        let auth = if self.mutual { "required" } else { "none" };
        t.insert("client_auth".into(), toml::Value::String(auth.into()));
        t
    }

    /// `--ca FILE --cert FILE --key FILE` for the CLI.
    pub fn cli_args(&self) -> Vec<String> {
        vec![
            "--ca".into(),
            self.ca.display().to_string(),
            "--cert".into(),
            self.cert.display().to_string(),
            "--key".into(),
            self.key.display().to_string(),
        ]
    }
}
