//! Clients bound to tenants: a `[[client]]` with `tenants` acts on those
//! tenants only. Another tenant named in a request is refused (23); a
//! request over every tenant must name one (23); an interaction of another
//! tenant is, to it, no interaction (34). Nothing the refused requests
//! named changes.

mod common;

use common::{write_config, Engine, Server, TempDir};
use ixn::client::{submit_request, Client, ClientError};
use ixn_shard::kv;
use ixn_shard::proto::{ClientType, ErrorCode};

const TENANTS: &str = r#"
[[client]]
name = "media-acme"
type = "media-server"
password = "a"
tenants = ["acme"]

[[client]]
name = "op-all"
type = "operator"
password = "o"

[[client]]
name = "op-beta"
type = "operator"
password = "b"
tenants = ["beta"]

[[tenant]]
name = "acme"
media-types = { chat = true }
[[tenant.business-process]]
name = "p"
[[tenant.business-process.queue]]
name = "inbound"

[[tenant]]
name = "beta"
media-types = { chat = true }
[[tenant.business-process]]
name = "p"
[[tenant.business-process.queue]]
name = "inbound"
"#;

fn code_of(r: Result<impl std::fmt::Debug, ClientError>) -> (ErrorCode, String) {
    match r {
        Err(ClientError::Server(e)) => (e.code, e.text.clone()),
        other => panic!("expected a server error, got {other:?}"),
    }
}

fn connect(server: &Server, t: ClientType, name: &str, password: &str) -> Client {
    Client::connect_as(server.addr.as_str(), t, name, Some(password)).expect("register")
}

#[test]
fn a_client_bound_to_tenants_acts_on_nothing_else() {
    let dir = TempDir::new("tenants");
    let cfg = write_config(&dir.0, &Engine::Sqlite, common::two_cores(), TENANTS);
    let mut server = Server::start(&cfg);
    let mut media = connect(&server, ClientType::MediaServer, "media-acme", "a");
    let mut all = connect(&server, ClientType::Operator, "op-all", "o");
    let mut beta_op = connect(&server, ClientType::Operator, "op-beta", "b");

    let mine = media.submit(submit_request("acme", "inbound", "chat", 0, kv![])).expect("its own tenant");
    let (code, text) = code_of(media.submit(submit_request("beta", "inbound", "chat", 0, kv![])));
    assert_eq!(code, ErrorCode::NotPermitted);
    assert_eq!(text, "client 'media-acme' may not act on tenant 'beta'");
    // A tenant nobody has: the usual answer.
    assert_eq!(
        code_of(media.submit(submit_request("nosuch", "inbound", "chat", 0, kv![]))).0,
        ErrorCode::UnknownTenant
    );

    let theirs = all.submit(submit_request("beta", "inbound", "chat", 0, kv![])).expect("an unbound client");
    // Another tenant's interaction does not exist for it, whatever it asks.
    let (code, text) = code_of(media.get(&theirs));
    assert_eq!((code, text), (ErrorCode::UnknownInteraction, format!("no interaction {theirs}")));
    assert_eq!(code_of(media.stop(&theirs, None)).0, ErrorCode::UnknownInteraction);
    assert_eq!(code_of(media.change(&theirs, kv![("x", "y")], Vec::new())).0, ErrorCode::UnknownInteraction);
    // Requests over every tenant must name one; naming the other is refused.
    assert_eq!(code_of(media.queue_depth_in("beta")).0, ErrorCode::NotPermitted);
    let mut op_beta_all = code_of(beta_op.find("priority >= 0", 10));
    assert_eq!(op_beta_all.0, ErrorCode::NotPermitted);
    assert!(op_beta_all.1.contains("name one"), "{}", op_beta_all.1);
    op_beta_all = code_of(beta_op.subscribe(None));
    assert_eq!(op_beta_all.0, ErrorCode::NotPermitted);
    assert_eq!(beta_op.find_in(Some("beta"), "priority >= 0", 10).expect("its tenant").0.len(), 1);
    assert_eq!(code_of(beta_op.find_in(Some("acme"), "priority >= 0", 10)).0, ErrorCode::NotPermitted);

    // Nothing refused changed anything.
    let props = beta_op.get(&theirs).expect("op-beta sees beta's interaction");
    assert!(!format!("{props:?}").contains("\"x\""), "{props:?}");
    assert_eq!(code_of(beta_op.get(&mine)).0, ErrorCode::UnknownInteraction);
    all.get(&mine).expect("an unbound client sees every tenant");
    all.stop(&theirs, None).expect("still there to stop");
    server.terminate();
}

#[test]
fn a_client_tenant_list_is_checked_at_start() {
    let dir = TempDir::new("tenants-bad");
    let bad = TENANTS.replace("tenants = [\"beta\"]", "tenants = [\"beta\", \"gamma\"]");
    let cfg = write_config(&dir.0, &Engine::Sqlite, "0", &bad);
    let err = Server::try_start(&cfg).err().expect("an unknown tenant is refused");
    assert!(err.contains("client 'op-beta': no tenant 'gamma' is configured"), "{err}");
    assert!(err.contains("ixn.toml:"), "the file and line: {err}");
    let empty = TENANTS.replace("tenants = [\"beta\"]", "tenants = []");
    let cfg = write_config(&dir.0, &Engine::Sqlite, "0", &empty);
    let err = Server::try_start(&cfg).err().expect("an empty list is refused");
    assert!(err.contains("tenants must list at least one tenant"), "{err}");
}
