//! Live reconfiguration of clients: `ixnctl reload` (POST /reload on the
//! management listener) and SIGHUP. Added clients register at once, a
//! changed password holds at once, a removed client's connection and
//! sessions end; a file that fails a check, or changes anything but
//! clients, is refused and the running configuration stays.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{eventually, write_config, Engine, Server, TempDir};
use ixn::client::{Client, ClientError};
use ixn_shard::proto::{ClientType, ErrorCode};

fn clients(ops_password: &str, with_old: bool, extra: &str) -> String {
    let mut s = format!(
        "[[client]]\nname = \"ops\"\ntype = \"operator\"\npassword = \"{ops_password}\"\n\n\
         [[client]]\nname = \"carrier\"\ntype = \"proxy\"\npassword = \"c\"\n\n"
    );
    if with_old {
        s.push_str("[[client]]\nname = \"old\"\ntype = \"operator\"\npassword = \"o\"\n\n");
    }
    s.push_str(extra);
    s
}

/// `ixnctl reload`: (exit ok, stdout + stderr).
fn reload(server: &Server) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ixnctl"))
        .args(["reload", "--management", server.management.as_deref().unwrap()])
        .output()
        .expect("run ixnctl");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn register(server: &Server, name: &str, password: &str) -> Result<Client, ClientError> {
    let t = if name == "new" { ClientType::MediaServer } else { ClientType::Operator };
    Client::connect_as(server.addr.as_str(), t, name, Some(password))
}

#[test]
fn clients_are_reloaded_without_a_restart() {
    let dir = TempDir::new("reload");
    let cfg = write_config(&dir.0, &Engine::Sqlite, common::two_cores(), &clients("a", true, ""));
    let mut server = Server::start(&cfg);
    let mut old = register(&server, "old", "o").expect("old registers");
    let mut carrier =
        Client::connect_as(server.addr.as_str(), ClientType::Proxy, "carrier", Some("c")).expect("carrier");
    carrier.open_session(7, ClientType::Operator, "old", Some("o")).expect("a session as old");
    carrier.ping().expect("the session works");
    assert!(register(&server, "new", "n").is_err(), "not configured yet");

    // Remove old, change ops' password, add new.
    let new_client = "[[client]]\nname = \"new\"\ntype = \"media-server\"\npassword = \"n\"\n";
    write_config(&dir.0, &Engine::Sqlite, common::two_cores(), &clients("b", false, new_client));
    let (ok, text) = reload(&server);
    assert!(ok, "{text}");
    assert_eq!(text.trim(), "clients reloaded: 1 added (new), 1 removed (old), 1 changed (ops), 1 unchanged");

    register(&server, "new", "n").expect("an added client registers at once");
    match register(&server, "ops", "a") {
        Err(ClientError::Server(e)) => assert_eq!(e.code, ErrorCode::AuthenticationFailed),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("the old password still works"),
    }
    register(&server, "ops", "b").expect("the new password");
    eventually("old's connection closed", Duration::from_secs(10), || match old.ping() {
        Err(_) => Ok(()),
        Ok(_) => Err("still answering".to_string()),
    });
    // The carrier's session as old ended; its own session goes on.
    match carrier.ping() {
        Err(ClientError::Server(e)) => assert_eq!(e.code, ErrorCode::NotRegistered, "{e:?}"),
        other => panic!("the session as old still works: {:?}", other.err()),
    }
    carrier.set_session(0);
    carrier.ping().expect("the carrier's own session");

    // A file that fails a check: refused with file:line, nothing changes.
    let broken = clients("b", false, new_client).replace("type = \"media-server\"", "type = \"nope\"");
    write_config(&dir.0, &Engine::Sqlite, common::two_cores(), &broken);
    let (ok, text) = reload(&server);
    assert!(!ok, "{text}");
    assert!(text.contains("ixn.toml:") && text.contains("nope"), "{text}");
    register(&server, "new", "n").expect("the running clients stay");

    // Anything but clients needs a restart: refused, named.
    let mut other = clients("z", false, new_client);
    other.push_str("[settings]\nrouting-timeout = 5\n");
    write_config(&dir.0, &Engine::Sqlite, common::two_cores(), &other);
    let (ok, text) = reload(&server);
    assert!(!ok, "{text}");
    assert!(text.contains("only [[client]] entries are reloaded; [settings] changed"), "{text}");
    register(&server, "ops", "b").expect("the password of before the refused reload");

    // SIGHUP does the same.
    let hup = "[[client]]\nname = \"new\"\ntype = \"media-server\"\npassword = \"n2\"\n";
    write_config(&dir.0, &Engine::Sqlite, common::two_cores(), &clients("b", false, hup));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGHUP) };
    eventually("the SIGHUP reload", Duration::from_secs(10), || match register(&server, "new", "n2") {
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    });
    // A tenant list holds for the sessions already registered, at once.
    let mut ops = register(&server, "ops", "b").unwrap();
    ops.find("priority >= 0", 10).expect("every tenant, before");
    let bound =
        clients("b", false, hup).replacen("password = \"b\"\n", "password = \"b\"\ntenants = [\"default\"]\n", 1);
    write_config(&dir.0, &Engine::Sqlite, common::two_cores(), &bound);
    let (ok, text) = reload(&server);
    assert!(ok && text.contains("1 changed (ops)"), "{text}");
    match ops.find("priority >= 0", 10) {
        Err(ClientError::Server(e)) => assert_eq!(e.code, ErrorCode::NotPermitted, "{e:?}"),
        other => panic!("the live session kept every tenant: {:?}", other.err()),
    }
    ops.find_in(Some("default"), "priority >= 0", 10).expect("its tenant");

    let log = std::fs::read_to_string(server.dir.join("server.log")).unwrap();
    assert!(log.contains("1018") && log.contains("1019") && log.contains("1032"), "reloads and removals are logged");
    server.terminate();
}
