//! Hashed client passwords: `ixnctl hash-password` makes them, the server
//! checks them off its shards (a flood of wrong ones does not stall a
//! shard), frames sent behind a registration wait for it, and a malformed
//! hash stops the start with file and line.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{write_config, Engine, Server, TempDir};
use ixn::client::{Client, ClientError};
use ixn_shard::proto::{msg_type, ClientType, ErrorCode, Request};

/// `ixnctl hash-password` with `password` on stdin.
fn hash(password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ixnctl"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run ixnctl");
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn config(dir: &TempDir, ops_hash: &str) -> std::path::PathBuf {
    let clients = format!(
        "[[client]]\nname = \"ops\"\ntype = \"operator\"\npassword = \"{ops_hash}\"\n\n\
         [[client]]\nname = \"plain\"\ntype = \"operator\"\npassword = \"clear\"\n"
    );
    write_config(&dir.0, &Engine::Sqlite, common::two_cores(), &clients)
}

fn register(server: &Server, name: &str, password: &str) -> Result<Client, ClientError> {
    Client::connect_as(server.addr.as_str(), ClientType::Operator, name, Some(password))
}

#[test]
fn hashed_passwords_are_checked_and_cached_and_clear_ones_still_work() {
    let dir = TempDir::new("cred-hash");
    let phc = hash("op-secret");
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    let mut server = Server::start(&config(&dir, &phc));
    let mut ops = register(&server, "ops", "op-secret").expect("the right password");
    ops.ping().unwrap();
    match register(&server, "ops", "op-secreT") {
        Err(ClientError::Server(e)) => {
            assert_eq!(
                (e.code, e.text.as_str()),
                (ErrorCode::AuthenticationFailed, "wrong credential for client 'ops'")
            )
        }
        Err(other) => panic!("a wrong password: {other}"),
        Ok(_) => panic!("a wrong password was taken"),
    }
    // The hash string itself is no password.
    assert!(register(&server, "ops", &phc).is_err());
    // Again, now from the shards' memory of it.
    for _ in 0..4 {
        register(&server, "ops", "op-secret").expect("the right password again").ping().unwrap();
    }
    register(&server, "plain", "clear").expect("clear text still works");
    assert!(register(&server, "plain", "clea").is_err());
    let log = std::fs::read_to_string(server.dir.join("server.log")).unwrap();
    assert!(log.contains("1017") && log.contains("plain"), "the clear password is reported at start");
    server.terminate();
}

#[test]
fn frames_behind_a_registration_wait_for_its_check() {
    let dir = TempDir::new("cred-pipeline");
    let mut server = Server::start(&config(&dir, &hash("pw")));
    // A fresh shard has not seen the credential: the check is the slow one.
    for _ in 0..2 {
        let mut c = Client::connect(server.addr.as_str()).unwrap();
        let reg = c.queue(&Request::RegisterClient {
            client_type: ClientType::Operator,
            name: "ops".into(),
            credential: Some("pw".into()),
        });
        let pings: Vec<u32> = (0..3).map(|_| c.queue(&Request::Ping)).collect();
        c.flush().unwrap();
        let f = c.recv().unwrap();
        assert_eq!((f.ref_id, f.msg_type), (reg, msg_type::EVENT_ACK), "{f:?}");
        for p in pings {
            let f = c.recv().unwrap();
            assert_eq!((f.ref_id, f.msg_type), (p, msg_type::EVENT_ACK), "a ping after the registration: {f:?}");
        }
    }
    server.terminate();
}

#[test]
fn a_flood_of_wrong_passwords_does_not_stall_the_shards() {
    let dir = TempDir::new("cred-flood");
    let mut server = Server::start(&config(&dir, &hash("pw")));
    let mut watchers: Vec<Client> = (0..4).map(|_| register(&server, "ops", "pw").unwrap()).collect();
    // Eighty registrations with wrong passwords, all sent at once: on a
    // shard their checks would run one after another, holding it for
    // seconds.
    let addr = server.addr.clone();
    let flood = std::thread::spawn(move || {
        let mut conns: Vec<Client> = (0..80).map(|_| Client::connect(addr.as_str()).unwrap()).collect();
        for (i, c) in conns.iter_mut().enumerate() {
            c.queue(&Request::RegisterClient {
                client_type: ClientType::Operator,
                name: "ops".into(),
                credential: Some(format!("wrong{i}")),
            });
            c.flush().unwrap();
        }
        let mut refused = 0;
        for c in &mut conns {
            let f = c.recv().unwrap();
            let code = f.get_int(ixn_shard::proto::attr::ERROR_CODE);
            assert!(
                code == Some(ErrorCode::AuthenticationFailed.code()) || code == Some(ErrorCode::Overloaded.code()),
                "{f:?}"
            );
            refused += 1;
        }
        refused
    });
    // Meanwhile every shard answers at once: each check (tens of ms of
    // CPU) runs on the verifier thread, never on a shard.
    let mut slowest = Duration::ZERO;
    while !flood.is_finished() {
        for w in &mut watchers {
            let t = Instant::now();
            w.ping().unwrap();
            slowest = slowest.max(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(flood.join().unwrap(), 80, "every wrong password refused");
    assert!(slowest < Duration::from_millis(750), "a ping waited {slowest:?} during the flood");
    server.terminate();
}

#[test]
fn a_malformed_hash_stops_the_start() {
    let dir = TempDir::new("cred-bad");
    let err = Server::try_start(&config(&dir, "$argon2id$v=19$nonsense")).err().expect("refused");
    assert!(err.contains("client 'ops': password not a valid Argon2 hash"), "{err}");
    assert!(err.contains("ixn.toml:"), "{err}");
}
