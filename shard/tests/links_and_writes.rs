//! An agent's link (an invitation or a handling) that ends while writes of
//! its interaction are in flight. Two rules keep the agent's desktop and the
//! agent's capacity in step:
//! - the agent's unit is freed only once its desktops have been told the
//!   link ended (that news waits behind the interaction's writes), so a
//!   desktop is never invited past its capacity as far as it knows;
//! - a change the agent asked for that ends its own link (stop, move) and
//!   then fails still ends the link: the desktops hear EventRevoked before
//!   the error, or they would go on holding what the server no longer
//!   links to them.

use std::sync::Arc;

use ixn_shard::agent::AgentRef;
use ixn_shard::catalog::{Catalog, Tenant};
use ixn_shard::kv;
use ixn_shard::machine::{Caller, Input, Origin, Output, Shard, ShardParams};
use ixn_shard::proto::request::error_of;
use ixn_shard::proto::{attr, msg_type, ClientType, ErrorCode, Frame, Request, Submit};

const MEDIA: Origin = Origin { shard: 0, conn: 1, session: 0 };
const DESK: Origin = Origin { shard: 0, conn: 3, session: 0 };

fn catalog(capacity: i64) -> Catalog {
    let mut t = Tenant::new("default");
    t.add_media("chat", true).unwrap();
    t.add_process("bp", &["inbound", "done"]).unwrap();
    t.set_strategy("inbound", None, None).unwrap();
    t.add_agent("a1", &[], &[("chat", capacity)], &[]).unwrap();
    t.add_place("p1").unwrap();
    Catalog::new(vec![t], true).unwrap()
}

/// One shard; its peer messages are fed back at once, its writes wait
/// until the test completes them.
struct T {
    s: Shard,
    now: i64,
    next_ref: u32,
    agent: Option<AgentRef>,
    /// Writes not completed yet, by token.
    writes: Vec<u64>,
    /// What the desktop received, in order.
    desk: Vec<Frame>,
    /// Answers to the media server: (ref, error code).
    media: Vec<(u32, Option<ErrorCode>)>,
}

impl T {
    fn new(capacity: i64) -> T {
        let s = Shard::new(ShardParams::new(1, 0, 1), Arc::new(catalog(capacity)));
        T {
            s,
            now: 1_800_000_000_000,
            next_ref: 1,
            agent: None,
            writes: Vec::new(),
            desk: Vec::new(),
            media: Vec::new(),
        }
    }

    fn feed(&mut self, input: Input) {
        let mut queue = vec![input];
        while !queue.is_empty() {
            self.now += 1;
            let mut out = Vec::new();
            self.s.handle(self.now, queue.remove(0), &mut out);
            self.s.audit_index().expect("indexes in step");
            for o in out {
                match o {
                    Output::Peer { msg, .. } => queue.push(Input::Peer { from: 0, msg }),
                    Output::Store { token, .. } => self.writes.push(token),
                    Output::Reply { origin, frame } | Output::Event { origin, frame } if origin == DESK => {
                        self.desk.push(frame)
                    }
                    Output::Reply { origin, frame } if origin == MEDIA => {
                        self.media.push((frame.ref_id, error_of(&frame).map(|e| e.code)))
                    }
                    Output::Bind { agent, .. } => self.agent = agent,
                    _ => {}
                }
            }
        }
    }

    fn ask(&mut self, origin: Origin, client_type: ClientType, request: Request) -> u32 {
        let ref_id = self.next_ref;
        self.next_ref += 1;
        let agent = if origin == DESK { self.agent } else { None };
        let caller =
            Caller { origin, ref_id, client_type, client_name: "t".into(), agent, tenants: Default::default() };
        self.feed(Input::Request { caller, request });
        ref_id
    }

    /// Completes the oldest write in flight.
    fn complete(&mut self, ok: bool) {
        let token = self.writes.remove(0);
        self.feed(Input::StorageDone { token, ok });
    }

    fn complete_all(&mut self) {
        while !self.writes.is_empty() {
            self.complete(true);
        }
    }

    fn login_ready(&mut self) {
        let t = || "default".to_string();
        let login =
            Request::AgentLogin { tenant: t(), agent: "a1".into(), place: "p1".into(), media: vec![], reason: None };
        self.ask(DESK, ClientType::AgentDesktop, login);
        self.complete_all();
        let ready = Request::SetReady { tenant: t(), agent: None, media: None, ready: true, reason: None };
        self.ask(DESK, ClientType::AgentDesktop, ready);
        self.complete_all();
        assert!(self.agent.is_some(), "logged in: {:?}", self.desk);
    }

    /// Submits an interaction and commits it (other writes in flight stay
    /// so); returns its id.
    fn submit(&mut self) -> String {
        let before = self.writes.len();
        let r = self.ask(
            MEDIA,
            ClientType::MediaServer,
            Request::Submit(Box::new(Submit {
                tenant: "default".into(),
                media_type: "chat".into(),
                interaction_type: "Inbound".into(),
                interaction_subtype: "InboundNew".into(),
                queue: "inbound".into(),
                priority: 0,
                properties: kv![("lang", "en")],
                id: None,
                received_at_ms: None,
            })),
        );
        assert_eq!(self.writes.len(), before + 1, "one write for the submit");
        let token = self.writes.pop().unwrap();
        self.feed(Input::StorageDone { token, ok: true });
        assert_eq!(self.media.last(), Some(&(r, None)));
        let newest = self.s.interactions().max_by_key(|ix| ix.tie).expect("submitted");
        newest.id.to_string()
    }

    /// The desktop's invitations, as it sees them after each frame it got:
    /// the most it held at once, and the ids it holds at the end.
    fn desktop_view(&self) -> (usize, Vec<(String, i64)>) {
        let mut held: Vec<(String, i64)> = Vec::new();
        let mut most = 0;
        for f in &self.desk {
            let key =
                || (f.get_str(attr::INTERACTION_ID).unwrap().to_string(), f.get_int(attr::TICKET).expect("a ticket"));
            match f.msg_type {
                msg_type::EVENT_INVITE => {
                    assert!(!held.iter().any(|(id, _)| *id == key().0), "offered twice: {:?}", self.desk);
                    held.push(key());
                }
                msg_type::EVENT_REVOKED => held.retain(|h| *h != key()),
                _ => {}
            }
            most = most.max(held.len());
        }
        (most, held)
    }

    fn revoke_reasons(&self) -> Vec<String> {
        self.desk
            .iter()
            .filter(|f| f.msg_type == msg_type::EVENT_REVOKED)
            .map(|f| f.get_str(attr::REASON).unwrap_or_default().to_string())
            .collect()
    }
}

#[test]
fn a_desktop_is_not_invited_anew_before_it_hears_its_invitation_ended() {
    let mut t = T::new(1);
    t.login_ready();
    let x = t.submit();
    assert_eq!(t.desktop_view().1.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), vec![x.clone()]);
    // A property change of x is in flight when the media server stops x:
    // the desktop's EventRevoked waits behind that write.
    t.ask(
        MEDIA,
        ClientType::MediaServer,
        Request::ChangeProperties { id: x.clone(), changed: kv![("lang", "fr")], deleted: vec![] },
    );
    t.ask(MEDIA, ClientType::MediaServer, Request::StopProcessing { id: x.clone(), reason: None });
    assert_eq!(t.writes.len(), 2, "the change and the stop in flight");
    let y = t.submit();
    let invited_to_y = |t: &T| {
        t.desk.iter().any(|f| f.msg_type == msg_type::EVENT_INVITE && f.get_str(attr::INTERACTION_ID) == Some(&*y))
    };
    assert!(!invited_to_y(&t), "y offered while the desktop still holds x: {:?}", t.desk);
    t.complete_all();
    assert!(invited_to_y(&t), "y offered once the desktop heard x ended: {:?}", t.desk);
    let (most, held) = t.desktop_view();
    assert_eq!(most, 1, "never more than its capacity, as the desktop sees it: {:?}", t.desk);
    assert_eq!(held.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), vec![y]);
    assert_eq!(t.revoke_reasons(), vec!["stopped"]);
}

#[test]
fn a_change_the_agent_asked_for_that_fails_still_ends_its_link_and_says_so() {
    // Stopped while invited, moved to another queue while handling: each
    // write fails, the interaction goes back to where it was, unlinked.
    for handling in [false, true] {
        let mut t = T::new(3);
        t.login_ready();
        let x = t.submit();
        let (_, held) = t.desktop_view();
        let ticket = held[0].1;
        if handling {
            t.ask(DESK, ClientType::AgentDesktop, Request::Accept { id: x.clone(), ticket: Some(ticket as u64) });
            t.complete_all();
        }
        let request = if handling {
            Request::PlaceInQueue { id: x.clone(), queue: Some("done".into()) }
        } else {
            Request::StopProcessing { id: x.clone(), reason: None }
        };
        let r = t.ask(DESK, ClientType::AgentDesktop, request);
        assert_eq!(t.writes.len(), 1);
        let seen = t.desk.len();
        t.complete(false);
        let after: Vec<_> = t.desk[seen..].iter().map(|f| (f.msg_type, f.ref_id)).collect();
        assert_eq!(
            &after[..2],
            &[(msg_type::EVENT_REVOKED, 0), (msg_type::EVENT_ERROR, r)],
            "handling {handling}: told the link ended, then that the change failed: {:?}",
            &t.desk[seen..]
        );
        assert!(error_of(&t.desk[seen + 1]).is_some_and(|e| e.code == ErrorCode::StorageFailure));
        assert_eq!(t.revoke_reasons(), vec!["storage-failure"]);
        assert!(t.s.get(&x).is_some(), "back where it was");
        // Offered again (to the same agent, the only one): a new ticket.
        t.complete_all();
        let (most, held) = t.desktop_view();
        assert_eq!(most, 1, "handling {handling}: {:?}", t.desk);
        assert_eq!(held.len(), 1, "offered again: {:?}", t.desk);
        assert_eq!(held[0].0, x);
        assert_ne!(held[0].1, ticket);
    }
}

#[test]
fn a_party_hears_of_a_property_change_only_once_it_has_committed() {
    let mut t = T::new(1);
    t.login_ready();
    let x = t.submit();
    let changed = |t: &T| t.desk.iter().filter(|f| f.msg_type == msg_type::EVENT_PROPERTIES_CHANGED).count();
    let change =
        |lang: &str| Request::ChangeProperties { id: x.clone(), changed: kv![("lang", lang)], deleted: vec![] };
    t.ask(MEDIA, ClientType::MediaServer, change("fr"));
    assert_eq!(changed(&t), 0, "told before the change committed");
    t.complete(false);
    assert_eq!(changed(&t), 0, "told of a change that failed");
    t.ask(MEDIA, ClientType::MediaServer, change("de"));
    t.complete(true);
    assert_eq!(changed(&t), 1);
    let f = t.desk.iter().rev().find(|f| f.msg_type == msg_type::EVENT_PROPERTIES_CHANGED).unwrap();
    assert_eq!(
        f.get_list(attr::PROPERTIES).and_then(|l| l.get("lang")?.as_str().map(str::to_string)).as_deref(),
        Some("de")
    );
}

#[test]
fn an_invitation_never_describes_a_change_that_failed() {
    // Stopped or not meanwhile (a stop pipelined behind the change stands).
    for stopped in [false, true] {
        let mut t = T::new(1);
        // Not ready yet: x waits in its queue.
        let t_ = || "default".to_string();
        let login =
            Request::AgentLogin { tenant: t_(), agent: "a1".into(), place: "p1".into(), media: vec![], reason: None };
        t.ask(DESK, ClientType::AgentDesktop, login);
        t.complete_all();
        let x = t.submit();
        let change = Request::ChangeProperties { id: x.clone(), changed: kv![("lang", "fr")], deleted: vec![] };
        t.ask(MEDIA, ClientType::MediaServer, change);
        assert_eq!(t.writes.len(), 1, "the change in flight");
        let ready = Request::SetReady { tenant: t_(), agent: None, media: None, ready: true, reason: None };
        t.ask(DESK, ClientType::AgentDesktop, ready);
        assert_eq!(t.writes.len(), 1, "offered while the change is in flight: {:?}", t.desk);
        if stopped {
            t.ask(MEDIA, ClientType::MediaServer, Request::StopProcessing { id: x.clone(), reason: None });
        }
        t.complete(false);
        t.complete_all();
        let lang_told: Vec<String> = t
            .desk
            .iter()
            .filter(|f| f.msg_type == msg_type::EVENT_INVITE)
            .filter_map(|f| {
                let properties = f.get_list(attr::INTERACTION)?.get("properties")?.as_list()?.clone();
                properties.get("lang")?.as_str().map(str::to_string)
            })
            .collect();
        assert_eq!(lang_told.len(), 1, "stopped {stopped}: one invitation: {:?}", t.desk);
        assert_eq!(lang_told, vec!["en"], "stopped {stopped}: invited with a change that failed");
        if !stopped {
            assert_eq!(t.s.get(&x).unwrap().properties().get("lang").and_then(|v| v.as_str()), Some("en"));
        }
    }
}
