//! TLS on the client listener: a TLS port beside the plain one, large
//! frames both ways over TLS, a plain-text client on the TLS port dropped
//! without harm, and mutual TLS (no certificate: refused in the handshake;
//! a certificate must name the client it registers as). Certificates are
//! made for each test by a throwaway CA (rcgen).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{write_config, Engine, Server, TempDir};
use ixn::client::submit_request;
use ixn_shard::proto::frame::{decode_body, split_frame};
use ixn_shard::proto::{attr, msg_type, ClientType, Frame, Request};
use ixn_shard::{kv, Value};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A CA, and certificates it issued, as PEM files in `dir`.
struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki { ca, ca_key, dir: dir.to_path_buf() }
    }

    /// A certificate for `names` (SANs), its PEM files `<file>.pem` and
    /// `<file>.key`; returns it and its key in DER.
    fn issue(&self, file: &str, names: &[&str], client: bool) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.extended_key_usages =
            vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        std::fs::write(self.dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(self.dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
        (cert.der().clone(), PrivateKeyDer::try_from(key.serialize_der()).unwrap())
    }

    fn client_config(
        &self,
        cert: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        Arc::new(match cert {
            Some((c, k)) => b.with_client_auth_cert(vec![c], k).unwrap(),
            None => b.with_no_client_auth(),
        })
    }
}

/// A server with a TLS listener (and mutual TLS with `mutual`).
fn start(dir: &TempDir, pki: &Pki, mutual: bool, extra: &str) -> Server {
    pki.issue("server", &["localhost", "127.0.0.1"], false);
    let cfg = write_config(&dir.0, &Engine::Sqlite, common::two_cores(), extra);
    let d = pki.dir.display();
    let mut tls = format!(
        "[server]\ntls-listen = \"127.0.0.1:0\"\ntls-certificate = \"{d}/server.pem\"\ntls-key = \"{d}/server.key\"\n"
    );
    if mutual {
        tls.push_str(&format!("tls-client-ca = \"{d}/ca.pem\"\n"));
    }
    let text = std::fs::read_to_string(&cfg).unwrap().replacen("[server]\n", &tls, 1);
    std::fs::write(&cfg, text).unwrap();
    Server::start(&cfg)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(server: &Server, config: Arc<rustls::ClientConfig>) -> Tls {
    let tcp = TcpStream::connect(server.tls.as_deref().expect("a TLS listener")).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    rustls::StreamOwned::new(rustls::ClientConnection::new(config, name).unwrap(), tcp)
}

/// Sends `request` and reads frames until its answer.
fn call(s: &mut impl ReadWrite, ref_id: u32, request: &Request) -> std::io::Result<Frame> {
    s.write_all(&request.encode(ref_id).encode())?;
    s.flush()?;
    let mut buf = Vec::new();
    loop {
        if let Some((header, body, total)) = split_frame(&buf, 64 << 20).unwrap() {
            let f = Frame {
                msg_type: header.msg_type(),
                ref_id: header.ref_id(),
                attrs: decode_body(body).unwrap(),
                raw: Vec::new(),
            };
            buf.drain(..total);
            if f.ref_id == ref_id {
                return Ok(f);
            }
            continue;
        }
        let mut chunk = [0u8; 16384];
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn register(name: &str, t: ClientType, password: Option<&str>) -> Request {
    Request::RegisterClient { client_type: t, name: name.into(), credential: password.map(str::to_string) }
}

#[test]
fn a_tls_port_serves_beside_the_plain_one() {
    let dir = TempDir::new("tls");
    let pki = Pki::new(&dir.0);
    let mut server = start(&dir, &pki, false, "");
    let mut s = connect(&server, pki.client_config(None));
    let ack = call(&mut s, 1, &register("media", ClientType::MediaServer, None)).expect("registration over TLS");
    assert_eq!(ack.msg_type, msg_type::EVENT_ACK, "{ack:?}");
    // A frame of 300 KB each way: many TLS records.
    let big = "x".repeat(300_000);
    let sub = Request::Submit(Box::new(submit_request("default", "inbound", "chat", 0, kv![("big", big.as_str())])));
    let ack = call(&mut s, 2, &sub).expect("submit over TLS");
    let id = ack.get_str(attr::INTERACTION_ID).expect("an id").to_string();
    let props = call(&mut s, 3, &Request::GetInteractionProperties { id: id.clone() }).unwrap();
    assert_eq!(props.msg_type, msg_type::EVENT_INTERACTION_PROPERTIES);
    let kv = props.get_list(attr::PROPERTIES).expect("properties");
    assert_eq!(kv.get("big"), Some(&Value::Str(big)));
    // Pipelined: ten pings in one write, ten answers.
    let mut bytes = Vec::new();
    for r in 10..20 {
        Request::Ping.encode(r).encode_into(&mut bytes);
    }
    s.write_all(&bytes).unwrap();
    for r in 10..20 {
        assert_eq!(call(&mut s, r, &Request::Ping).map(|f| f.msg_type).ok(), Some(msg_type::EVENT_ACK));
    }
    // The plain port is unaffected.
    server.client().ping().expect("plain");

    // A plain-text client on the TLS port: no TLS session, no answer, the
    // connection closes; the server goes on.
    let mut plain = TcpStream::connect(server.tls.as_deref().unwrap()).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reg = Vec::new();
    register("plain", ClientType::Operator, None).encode(1).encode_into(&mut reg);
    plain.write_all(&reg).unwrap();
    let mut back = Vec::new();
    let _ = plain.read_to_end(&mut back);
    assert!(split_frame(&back, 1 << 20).ok().flatten().is_none(), "no protocol frame in clear: {back:?}");
    assert_eq!(call(&mut s, 30, &Request::Ping).unwrap().msg_type, msg_type::EVENT_ACK);
    server.terminate();
}

#[test]
fn mutual_tls_wants_a_certificate_that_names_the_client() {
    let dir = TempDir::new("mtls");
    let pki = Pki::new(&dir.0);
    let clients = "[[client]]\nname = \"ops\"\ntype = \"operator\"\npassword = \"p\"\n\n\
                   [[client]]\nname = \"other\"\ntype = \"operator\"\npassword = \"p\"\n";
    let mut server = start(&dir, &pki, true, clients);
    // No certificate: the handshake fails, nothing is served.
    let mut s = connect(&server, pki.client_config(None));
    assert!(call(&mut s, 1, &register("ops", ClientType::Operator, Some("p"))).is_err());
    // A certificate from another CA: refused too.
    let stranger =
        Pki::new(&dir.0.join("..").join(format!("{}-other", dir.0.file_name().unwrap().to_string_lossy())).tap_mkdir());
    let wrong = stranger.issue("ops", &["ops"], true);
    let mut s = connect(&server, pki.client_config(Some(wrong)));
    assert!(call(&mut s, 1, &register("ops", ClientType::Operator, Some("p"))).is_err());
    // A certificate for "ops": ops may register, other may not.
    let ops = pki.issue("ops", &["ops"], true);
    let mut s = connect(&server, pki.client_config(Some(ops)));
    let f = call(&mut s, 1, &register("other", ClientType::Operator, Some("p"))).unwrap();
    assert_eq!(f.get_int(attr::ERROR_CODE), Some(22), "{f:?}");
    assert_eq!(f.get_str(attr::ERROR_TEXT), Some("the client certificate is not valid for client name 'other'"));
    let f = call(&mut s, 2, &register("ops", ClientType::Operator, Some("p"))).unwrap();
    assert_eq!(f.msg_type, msg_type::EVENT_ACK, "{f:?}");
    assert_eq!(call(&mut s, 3, &Request::Ping).unwrap().msg_type, msg_type::EVENT_ACK);
    server.terminate();
}

trait TapMkdir {
    fn tap_mkdir(self) -> PathBuf;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> PathBuf {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

#[test]
fn a_handshake_flood_does_not_stall_the_shards() {
    let dir = TempDir::new("tls-flood");
    let pki = Pki::new(&dir.0);
    let mut server = start(&dir, &pki, false, "");
    let mut watchers: Vec<ixn::client::Client> = (0..4).map(|_| server.client()).collect();
    let config = pki.client_config(None);
    let addr = server.tls.clone().unwrap();
    // 200 handshakes at once, each completed with a registration.
    let flood: Vec<_> = (0..200)
        .map(|i| {
            let (config, addr) = (config.clone(), addr.clone());
            std::thread::spawn(move || {
                let tcp = TcpStream::connect(&addr).unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let name = ServerName::try_from("localhost").unwrap();
                let mut s = rustls::StreamOwned::new(rustls::ClientConnection::new(config, name).unwrap(), tcp);
                call(&mut s, 1, &register(&format!("c{i}"), ClientType::Operator, None)).map(|f| f.msg_type)
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    while flood.iter().any(|t| !t.is_finished()) {
        for w in &mut watchers {
            let t = std::time::Instant::now();
            w.ping().unwrap();
            slowest = slowest.max(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for t in flood {
        assert_eq!(t.join().unwrap().ok(), Some(msg_type::EVENT_ACK));
    }
    eprintln!("slowest ping during 200 TLS handshakes: {slowest:?}");
    assert!(slowest < Duration::from_millis(750), "a ping waited {slowest:?} during the handshakes");
    server.terminate();
}

#[test]
fn a_reload_reads_renewed_certificate_files() {
    let dir = TempDir::new("tls-reload");
    let pki = Pki::new(&dir.0);
    let mut server = start(&dir, &pki, false, "");
    let mut before = connect(&server, pki.client_config(None));
    assert_eq!(call(&mut before, 1, &register("a", ClientType::Operator, None)).unwrap().msg_type, msg_type::EVENT_ACK);

    // A new CA issues the server a new certificate, into the same files.
    let renewed_dir = dir.0.join("renewed").tap_mkdir();
    let renewed = Pki::new(&renewed_dir);
    renewed.issue("server", &["localhost", "127.0.0.1"], false);
    let mut fresh = connect(&server, renewed.client_config(None));
    assert!(call(&mut fresh, 1, &register("b", ClientType::Operator, None)).is_err(), "not yet");
    let reload = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ixnctl"))
            .args(["reload", "--management", server.management.as_deref().unwrap()])
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
    };
    // A key file that does not load refuses the reload; TLS goes on as before.
    std::fs::copy(renewed_dir.join("server.pem"), pki.dir.join("server.pem")).unwrap();
    std::fs::write(pki.dir.join("server.key"), "not a key").unwrap();
    let (ok, text) = reload();
    assert!(!ok && text.contains("tls-key"), "{text}");
    let mut still = connect(&server, pki.client_config(None));
    assert_eq!(call(&mut still, 1, &register("c", ClientType::Operator, None)).unwrap().msg_type, msg_type::EVENT_ACK);

    std::fs::copy(renewed_dir.join("server.key"), pki.dir.join("server.key")).unwrap();
    let (ok, text) = reload();
    assert!(ok && text.contains("TLS certificate files read again"), "{text}");
    let mut fresh = connect(&server, renewed.client_config(None));
    assert_eq!(call(&mut fresh, 1, &register("d", ClientType::Operator, None)).unwrap().msg_type, msg_type::EVENT_ACK);
    // A session opened before keeps working.
    assert_eq!(call(&mut before, 2, &Request::Ping).unwrap().msg_type, msg_type::EVENT_ACK);
    server.terminate();
}

#[test]
fn the_client_library_and_ixnctl_speak_tls() {
    let dir = TempDir::new("tls-client");
    let pki = Pki::new(&dir.0);
    let clients = "[[client]]\nname = \"ops\"\ntype = \"operator\"\npassword = \"p\"\n";
    let mut server = start(&dir, &pki, true, clients);
    pki.issue("ops", &["ops"], true);
    let d = &pki.dir;
    let config = ixn::client::tls_config(&d.join("ca.pem"), Some((&d.join("ops.pem"), &d.join("ops.key")))).unwrap();
    let tls = server.tls.clone().unwrap();
    let mut c = ixn::client::Client::connect_tls(tls.as_str(), config, "localhost").unwrap();
    c.register(ClientType::Operator, "ops", Some("p")).expect("registration over TLS");
    let id = c.submit(submit_request("default", "inbound", "chat", 0, kv![])).expect("a submission over TLS");
    c.get(&id).expect("read back");

    // Heartbeats over TLS: the server drops a connection silent for 1 s;
    // the library's pings keep this one through 3 s of idleness, and large
    // answers (several TLS records) still read whole between pings.
    let config = ixn::client::tls_config(&d.join("ca.pem"), Some((&d.join("ops.pem"), &d.join("ops.key")))).unwrap();
    let mut h = ixn::client::Client::connect_tls(tls.as_str(), config, "localhost").unwrap();
    let beat = ixn::client::Heartbeat::new(Duration::from_secs(1));
    h.register_with_heartbeat(ClientType::Operator, "ops", Some("p"), beat).expect("registration with heartbeats");
    let big: String = "x".repeat(60_000);
    let id = h.submit(submit_request("default", "inbound", "chat", 0, kv![("big", big.as_str())])).unwrap();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(1));
        let got = h.get(&id).expect("still connected after a silent second");
        let props = got.get_list(ixn_shard::proto::attr::PROPERTIES).expect("properties");
        assert_eq!(props.get("big").and_then(|v| v.as_str()).map(str::len), Some(60_000));
    }

    let ixnctl = |extra: &[&str]| {
        let port = tls.rsplit_once(':').unwrap().1;
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ixnctl"))
            .args(["--server", &format!("localhost:{port}"), "--name", "ops", "--credential", "p"])
            .arg("--tls-ca")
            .arg(d.join("ca.pem"))
            .args(extra)
            .arg("ping")
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
    };
    let (ok, text) =
        ixnctl(&["--tls-cert", d.join("ops.pem").to_str().unwrap(), "--tls-key", d.join("ops.key").to_str().unwrap()]);
    assert!(ok && text.starts_with("pong"), "{text}");
    let (ok, text) = ixnctl(&[]);
    assert!(!ok, "no client certificate under mutual TLS: {text}");
    server.terminate();
}
