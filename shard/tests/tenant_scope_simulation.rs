//! Simulation: clients bound to tenants, in random histories over two
//! tenants. Whatever a bound client asks, it never learns or changes
//! anything of a tenant it is not bound to: a request naming such a tenant
//! or every tenant is refused (23) and changes nothing; a request about an
//! interaction of such a tenant is answered as if there were none (34)
//! and changes nothing; what its searches and snapshots return is of its
//! own tenants only. Unbound clients act on both.
//!
//! Fixed seeds, then fresh random seeds for a time box (sim/mod.rs says how
//! to replay a failing seed).

mod one_shard;
mod sim;

use std::collections::BTreeMap;

use ixn_shard::catalog::{Catalog, Tenant, TenantIdx};
use ixn_shard::interaction::InteractionRecord;
use ixn_shard::kv;
use ixn_shard::machine::{Origin, TenantScope};
use ixn_shard::proto::request::error_of;
use ixn_shard::proto::{attr, msg_type, ClientType, ErrorCode, Frame, Request, Submit};
use one_shard::Driver;
use sim::{cover, run_seeds, Rng};

const STEPS: usize = 150;
const TENANTS: [&str; 2] = ["a", "b"];

fn catalog() -> Catalog {
    let tenants = TENANTS
        .iter()
        .map(|name| {
            let mut t = Tenant::new(*name);
            t.add_media("chat", true).unwrap();
            t.add_process("bp", &["inbound", "done"]).unwrap();
            t.link_next("inbound", "done").unwrap();
            t
        })
        .collect();
    Catalog::new(tenants, true).unwrap()
}

/// A client: its connection and what it may act on (`None`: every tenant).
#[derive(Clone, Copy)]
struct Client {
    origin: Origin,
    bound: Option<TenantIdx>,
}

impl Client {
    fn scope(&self) -> TenantScope {
        self.bound.map_or_else(TenantScope::all, |t| TenantScope::only(vec![t]))
    }

    fn allows(&self, t: TenantIdx) -> bool {
        self.bound.is_none_or(|b| b == t)
    }
}

/// Every live interaction's record, by id.
fn state(d: &Driver) -> BTreeMap<String, InteractionRecord> {
    d.shard.interactions().map(|ix| (ix.id.to_string(), d.shard.record(&ix.id).unwrap())).collect()
}

fn ids_in(f: &Frame) -> Vec<String> {
    f.lists(attr::INTERACTION).iter().filter_map(|l| l.get("id")?.as_str().map(str::to_string)).collect()
}

fn submit(tenant: &str) -> Request {
    Request::Submit(Box::new(Submit {
        tenant: tenant.into(),
        media_type: "chat".into(),
        interaction_type: "Inbound".into(),
        interaction_subtype: "InboundNew".into(),
        queue: "inbound".into(),
        priority: 1,
        properties: kv![("lang", "en")],
        id: None,
        received_at_ms: None,
    }))
}

fn run(seed: u64) {
    let mut rng = Rng(seed);
    let mut d = Driver::new(catalog());
    let clients: Vec<Client> = [None, Some(0), Some(1), Some(0), Some(1)]
        .into_iter()
        .enumerate()
        .map(|(i, bound)| Client { origin: Origin { shard: 0, conn: 10 + i as u64, session: 0 }, bound })
        .collect();
    let mut snapshots: Vec<(Client, u64)> = Vec::new();
    for step in 0..STEPS {
        let c = *rng.pick(&clients).unwrap();
        let known: Vec<String> = state(&d).into_keys().collect();
        let id = rng.pick(&known).cloned();
        let tenant_of = |d: &Driver, id: &str| d.shard.get(id).map(|ix| ix.tenant);
        let named = *rng.pick(&TENANTS).unwrap();
        let request = match rng.below(9) {
            0 | 1 => submit(named),
            2 => Request::GetInteractionProperties { id: id.clone().unwrap_or_default() },
            3 => Request::ChangeProperties {
                id: id.clone().unwrap_or_default(),
                changed: kv![("x", "1")],
                deleted: vec![],
            },
            4 => Request::StopProcessing { id: id.clone().unwrap_or_default(), reason: None },
            5 => Request::PlaceInQueue { id: id.clone().unwrap_or_default(), queue: Some("done".into()) },
            6 => Request::FindInteractions {
                tenant: rng.chance(40).then(|| named.to_string()),
                condition: "priority >= 0".into(),
                limit: 50,
            },
            7 => Request::GetQueueDepth { tenant: named.into() },
            _ => Request::TakeSnapshot {
                tenant: rng.chance(40).then(|| named.to_string()),
                condition: "priority >= 0".into(),
                lock: false,
                limit: None,
            },
        };
        let about = request.interaction_id().filter(|_| !matches!(request, Request::Submit(_))).map(str::to_string);
        let names = request.tenant_named();
        let hidden = about.as_deref().and_then(|i| tenant_of(&d, i)).is_some_and(|t| !c.allows(t));
        let named_other = matches!(names, Some(Some(n)) if !c.allows(d.shard.catalog().tenant(n).unwrap()));
        let every = c.bound.is_some() && matches!(names, Some(None));
        let before = state(&d);
        let what = format!("step {step}: {:?} bound to {:?}: {request:?}", c.origin.conn, c.bound);
        let snapshot = matches!(request, Request::TakeSnapshot { .. });
        let f = d.ask_as(c.origin, ClientType::Operator, c.scope(), request);
        let err = error_of(&f);
        if named_other || every {
            assert_eq!(err.as_ref().map(|e| e.code), Some(ErrorCode::NotPermitted), "{what}: {f:?}");
            assert_eq!(state(&d), before, "{what}: a refused request changed something");
            cover(if every { "a bound client asked for every tenant" } else { "a bound client named another tenant" });
            continue;
        }
        if hidden {
            let e = err.unwrap_or_else(|| panic!("{what}: another tenant's interaction was served: {f:?}"));
            assert_eq!(e.code, ErrorCode::UnknownInteraction, "{what}");
            assert_eq!(e.text, format!("no interaction {}", about.unwrap()), "{what}");
            assert_eq!(state(&d), before, "{what}: a refused request changed something");
            cover("another tenant's interaction hidden");
            continue;
        }
        if let Some(i) = &about {
            if err.is_none() && before.get(i).is_some_and(|r| r.tenant != TENANTS[c.bound.unwrap_or(0) as usize]) {
                cover("an unbound client acted across tenants");
            }
        }
        // What a search or a snapshot returns is of the client's tenants.
        let mut returned = ids_in(&f);
        if snapshot && err.is_none() {
            let snap = f.get_int(attr::SNAPSHOT_ID).expect("a snapshot id") as u64;
            let page = d.ask_as(
                c.origin,
                ClientType::Operator,
                c.scope(),
                Request::GetSnapshotInteractions { snapshot: snap, start: 0, count: 500 },
            );
            returned.extend(ids_in(&page));
            snapshots.push((c, snap));
        }
        for r in &returned {
            let t = tenant_of(&d, r).expect("returned ids are live");
            assert!(c.allows(t), "{what}: returned {r} of tenant {t}");
        }
        if c.bound.is_some() && !returned.is_empty() {
            cover("a bound client's search returned its own tenant only");
        }
        assert!(f.msg_type != msg_type::EVENT_ERROR || err.is_some(), "{what}");
    }
    for (c, snap) in snapshots {
        d.ask_as(c.origin, ClientType::Operator, c.scope(), Request::ReleaseSnapshot { snapshot: snap });
    }
}

#[test]
fn bound_clients_never_see_or_change_another_tenant() {
    run_seeds(
        "tenant_scope_simulation",
        "bound_clients_never_see_or_change_another_tenant",
        20,
        &[
            "a bound client named another tenant",
            "a bound client asked for every tenant",
            "another tenant's interaction hidden",
            "an unbound client acted across tenants",
            "a bound client's search returned its own tenant only",
        ],
        run,
    );
}
