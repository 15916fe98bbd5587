//! The backend's TLS against a real PostgreSQL that requires it
//! ([`PgServer::start_tls`]: `hostssl` only, so a connection without TLS is
//! refused), with a throwaway CA and a server certificate for the DNS name
//! `localhost` and the address `127.0.0.1`, made at test time (nothing of
//! it is kept).
//!
//! One such server per test process; each test takes a database of its
//! own on it.

use std::sync::OnceLock;
use std::time::Duration;

use futures::executor::block_on;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

use super::{PoolOptions, PostgresBackend};
use crate::store::backend::{Backend, NewIncident, Outcome, Write};
use crate::store::test_postgres::PgServer;

/// The TLS server of this test process and the CAs of the tests.
struct Tls {
    server: PgServer,
    /// The CA that signed the server's certificate, PEM.
    ca: String,
    /// A CA that signed nothing the server has, PEM.
    other_ca: String,
}

static TLS: OnceLock<Tls> = OnceLock::new();

/// A new self-signed CA: its certificate (PEM) and what signs with it.
fn certificate_authority(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let certificate = params.self_signed(&key).unwrap().pem();
    (certificate, Issuer::new(params, key))
}

/// This process's TLS server, started on first use.
fn tls() -> &'static Tls {
    TLS.get_or_init(|| {
        let (ca, issuer) = certificate_authority("Command Post test CA");
        let (other_ca, _) = certificate_authority("Command Post other test CA");
        let key = KeyPair::generate().unwrap();
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let certificate = params.signed_by(&key, &issuer).unwrap().pem();
        let server = PgServer::start_tls(&certificate, &key.serialize_pem())
            .unwrap_or_else(|error| panic!("{error}"));
        Tls {
            server,
            ca,
            other_ca,
        }
    })
}

/// A new database on the TLS server: its URL with `host` and `query`.
fn database(host: &str, query: &str) -> String {
    let tls = tls();
    let created = tls.server.create_database();
    let name = created
        .rsplit('/')
        .next()
        .and_then(|last| last.split('?').next())
        .unwrap();
    format!(
        "postgres://postgres@{host}:{}/{name}{query}",
        tls.server.port()
    )
}

/// `pem` written to a file in `dir`: its path.
fn pem_file(dir: &TempDir, name: &str, pem: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, pem).unwrap();
    path.to_str().unwrap().to_owned()
}

fn open(url: &str) -> PostgresBackend {
    PostgresBackend::open(url, PoolOptions::default()).unwrap_or_else(|error| panic!("{error}"))
}

/// Why `url` does not open, within a short wait.
fn refusal(url: &str) -> String {
    let options = PoolOptions {
        size: 1,
        connection_timeout: Duration::from_secs(3),
    };
    let Err(error) = PostgresBackend::open(url, options) else {
        panic!("{url} opened");
    };
    error.to_string()
}

/// Whether the backend's connection is encrypted, as the server sees it.
fn encrypted(backend: &PostgresBackend) -> bool {
    let client = backend.connection().unwrap();
    block_on(client.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    ))
    .unwrap()
    .get(0)
}

/// Creates an incident through `backend` and reads it back.
fn stores_and_reads(backend: &PostgresBackend) {
    let outcomes = backend
        .commit(vec![Write::CreateIncident(Box::new(|id| NewIncident {
            record: format!("{id} over TLS").into_bytes(),
            doc: b"doc".to_vec(),
            events: vec![b"declared".to_vec()],
        }))])
        .unwrap();
    assert!(
        matches!(outcomes[..], [Outcome::Created(Ok(1))]),
        "{outcomes:?}"
    );
    let incidents = backend.incidents().unwrap();
    assert_eq!(incidents.len(), 1);
    assert!(
        String::from_utf8_lossy(&incidents[0]).ends_with(" over TLS"),
        "{incidents:?}"
    );
    assert_eq!(backend.doc(1).unwrap().snapshot, Some((0, b"doc".to_vec())));
}

#[test]
fn tls_require_encrypts_and_the_store_works_through_it() {
    let backend = open(&database("127.0.0.1", "?sslmode=require"));
    assert!(encrypted(&backend));
    stores_and_reads(&backend);
    // libpq's default, prefer, takes TLS where the server offers it.
    assert!(encrypted(&open(&database("127.0.0.1", ""))));
}

#[test]
fn tls_verify_full_with_the_ca_connects_to_a_host_the_certificate_names() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pem_file(&dir, "ca.pem", &tls().ca);
    // A DNS name, and an address (no SNI: the certificate's IP address
    // entry is checked).
    for host in ["localhost", "127.0.0.1"] {
        let backend = open(&database(
            host,
            &format!("?sslmode=verify-full&sslrootcert={ca}"),
        ));
        assert!(encrypted(&backend), "{host}");
        stores_and_reads(&backend);
    }
}

#[test]
fn tls_verify_full_refuses_a_certificate_of_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let other = pem_file(&dir, "other-ca.pem", &tls().other_ca);
    // verify-ca, and require with a root certificate (as in libpq), check
    // the chain too.
    for mode in ["verify-full", "verify-ca", "require"] {
        let error = refusal(&database(
            "localhost",
            &format!("?sslmode={mode}&sslrootcert={other}"),
        ));
        assert!(
            error.contains("invalid peer certificate"),
            "{mode}: {error}"
        );
        assert!(error.contains("UnknownIssuer"), "{mode}: {error}");
    }
}

/// A host name the certificate does not carry, reached at 127.0.0.1
/// (`hostaddr`: the connection goes there, TLS checks the name).
const OTHER_NAME: &str = "db.invalid";

#[test]
fn tls_verify_full_refuses_a_host_the_certificate_does_not_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pem_file(&dir, "ca.pem", &tls().ca);
    let error = refusal(&database(
        OTHER_NAME,
        &format!("?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}"),
    ));
    assert!(error.contains("invalid peer certificate"), "{error}");
    assert!(
        error.contains(&format!("not valid for name \"{OTHER_NAME}\"")),
        "{error}"
    );
}

#[test]
fn tls_verify_ca_checks_the_chain_but_not_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pem_file(&dir, "ca.pem", &tls().ca);
    let backend = open(&database(
        OTHER_NAME,
        &format!("?hostaddr=127.0.0.1&sslmode=verify-ca&sslrootcert={ca}"),
    ));
    assert!(encrypted(&backend));
    stores_and_reads(&backend);
}

#[test]
fn tls_a_server_requiring_tls_refuses_sslmode_disable() {
    let error = refusal(&database("127.0.0.1", "?sslmode=disable"));
    assert!(error.contains("no encryption"), "{error}");
}
