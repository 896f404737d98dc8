//! Domain events: each change of an interaction or an agent, typed and with
//! its data. The state machine makes them and says who receives them; they
//! become wire frames only at the edge ([`Event::frame`], called by the
//! connection that sends one), so every consumer of events (the reporting
//! stream, the event log) gets the same event, and the core knows nothing
//! of how a subscriber's frame is laid out.
//!
//! An event names catalog entries by index (tenant, queue, agent, place,
//! media type): the catalog is fixed for the life of the process and every
//! thread holds it. Names a client made up (a workbin owner, a reason, the
//! agent a transfer came from) are carried as text.

use std::sync::Arc;

use crate::catalog::{AgentIdx, Catalog, MediaIdx, PlaceIdx, QueueIdx, TenantIdx, WorkbinIdx};
use crate::interaction::{IxId, Millis};
use crate::proto::frame::Frame;
use crate::proto::msg::{attr, msg_type};
use crate::value::{KvList, Value};

/// Text in an event: a reason, a workbin owner, an agent's login id.
pub type Text = Arc<str>;

/// One change, when it was made and in which tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// When the server made the change (ms since the Unix epoch); for a
    /// submission, when it was committed.
    pub time: Millis,
    pub tenant: TenantIdx,
    pub subject: Subject,
    pub what: What,
}

/// What an event is about.
#[derive(Clone, Debug, PartialEq)]
pub enum Subject {
    /// An interaction, where it is after the change (for a move out of a
    /// workbin: the workbin it leaves).
    Interaction {
        id: IxId,
        media: MediaIdx,
        at: Location,
    },
    Agent(AgentIdx),
}

/// Where an interaction is.
#[derive(Clone, Debug, PartialEq)]
pub enum Location {
    Queue(QueueIdx),
    Workbin { workbin: WorkbinIdx, owner: Text },
}

/// The change. Interaction events first, then agent events, in the order
/// of their message types (docs/protocol.md, "Reporting events").
#[derive(Clone, Debug, PartialEq)]
pub enum What {
    Submitted,
    /// `from`: the queue it was in, when a place request moved it between
    /// queues.
    PlacedInQueue {
        from: Option<QueueIdx>,
    },
    TakenFromQueue {
        agent: AgentIdx,
        place: PlaceIdx,
    },
    AgentInvited {
        agent: AgentIdx,
        place: PlaceIdx,
        ticket: u64,
        /// The agent transferring it, if any.
        from_agent: Option<Text>,
    },
    InviteRevoked {
        agent: AgentIdx,
        ticket: u64,
        reason: Text,
    },
    Rejected {
        agent: AgentIdx,
        ticket: u64,
        reason: Option<Text>,
    },
    PartyAdded {
        agent: AgentIdx,
        place: PlaceIdx,
    },
    PartyRemoved {
        agent: AgentIdx,
        reason: Option<Text>,
    },
    /// `changed`: the keys added or changed with their new values (deleted
    /// keys are not listed).
    PropertiesChanged {
        changed: KvList,
    },
    Held {
        agent: AgentIdx,
    },
    Resumed {
        agent: AgentIdx,
    },
    /// `from`: the queue it was in, if it was in one.
    PlacedInWorkbin {
        from: Option<QueueIdx>,
    },
    /// `by`: the agent (and its place) that took it by accepting it; none
    /// when a place request moved it to a queue.
    TakenFromWorkbin {
        by: Option<(AgentIdx, PlaceIdx)>,
    },
    ProcessingStopped {
        reason: Option<Text>,
    },
    AgentLogin {
        place: PlaceIdx,
        /// Media types logged in on, with their capacities.
        media: Vec<(MediaIdx, u16)>,
        reason: Option<Text>,
    },
    AgentLogout {
        place: PlaceIdx,
        reason: Text,
    },
    ReadyForMedia {
        media: MediaIdx,
        reason: Option<Text>,
    },
    NotReadyForMedia {
        media: MediaIdx,
        reason: Option<Text>,
    },
    MediaAdded {
        media: MediaIdx,
        capacity: u16,
    },
    MediaRemoved {
        media: MediaIdx,
    },
    DoNotDisturb {
        on: bool,
    },
}

impl What {
    /// The reporting event's message type.
    pub fn msg_type(&self) -> u16 {
        use msg_type::*;
        match self {
            What::Submitted => EVENT_INTERACTION_SUBMITTED,
            What::PlacedInQueue { .. } => EVENT_PLACED_IN_QUEUE,
            What::TakenFromQueue { .. } => EVENT_TAKEN_FROM_QUEUE,
            What::AgentInvited { .. } => EVENT_AGENT_INVITED,
            What::InviteRevoked { .. } => EVENT_INVITE_REVOKED,
            What::Rejected { .. } => EVENT_REJECTED,
            What::PartyAdded { .. } => EVENT_PARTY_ADDED,
            What::PartyRemoved { .. } => EVENT_PARTY_REMOVED,
            What::PropertiesChanged { .. } => EVENT_PROPERTIES_CHANGED,
            What::Held { .. } => EVENT_HELD,
            What::Resumed { .. } => EVENT_RESUMED,
            What::PlacedInWorkbin { .. } => EVENT_PLACED_IN_WORKBIN,
            What::TakenFromWorkbin { .. } => EVENT_TAKEN_FROM_WORKBIN,
            What::ProcessingStopped { .. } => EVENT_PROCESSING_STOPPED,
            What::AgentLogin { .. } => EVENT_AGENT_LOGIN,
            What::AgentLogout { .. } => EVENT_AGENT_LOGOUT,
            What::ReadyForMedia { .. } => EVENT_READY_FOR_MEDIA,
            What::NotReadyForMedia { .. } => EVENT_NOT_READY_FOR_MEDIA,
            What::MediaAdded { .. } => EVENT_MEDIA_ADDED,
            What::MediaRemoved { .. } => EVENT_MEDIA_REMOVED,
            What::DoNotDisturb { on: true } => EVENT_DO_NOT_DISTURB_ON,
            What::DoNotDisturb { on: false } => EVENT_DO_NOT_DISTURB_OFF,
        }
    }

    /// Whether this is an event about an agent (else about an interaction).
    pub fn about_agent(&self) -> bool {
        self.msg_type() >= msg_type::EVENT_AGENT_LOGIN
    }
}

impl Event {
    /// The reporting event's frame (reference id 0, no EventSequence: the
    /// connection numbers what it sends). Attributes in the documented
    /// order: the subject's, then the event's own.
    pub fn frame(&self, catalog: &Catalog) -> Frame {
        let t = catalog.tenant_at(self.tenant);
        let login = |a: &AgentIdx| t.agents[*a as usize].login_id.as_str();
        let place = |p: &PlaceIdx| t.places[*p as usize].name.as_str();
        let media = |m: &MediaIdx| t.media[*m as usize].name.as_str();
        let mut f =
            Frame::new(self.what.msg_type(), 0).with(attr::EVENT_TIME, self.time).with(attr::TENANT, t.name.as_str());
        match &self.subject {
            Subject::Interaction { id, media: m, at } => {
                f.push(attr::INTERACTION_ID, &**id);
                f.push(attr::MEDIA_TYPE, media(m));
                match at {
                    Location::Queue(q) => f.push(attr::QUEUE, t.queues[*q as usize].name.as_str()),
                    Location::Workbin { workbin, owner } => {
                        f.push(attr::WORKBIN, t.workbins[*workbin as usize].name.as_str());
                        f.push(attr::WORKBIN_OWNER, &**owner);
                    }
                }
            }
            Subject::Agent(a) => f.push(attr::AGENT_ID, login(a)),
        }
        let reason = |f: &mut Frame, r: &Option<Text>| {
            if let Some(r) = r {
                f.push(attr::REASON, &**r);
            }
        };
        match &self.what {
            What::Submitted | What::DoNotDisturb { .. } => {}
            What::PlacedInQueue { from } | What::PlacedInWorkbin { from } => {
                if let Some(q) = from {
                    f.push(attr::FROM_QUEUE, t.queues[*q as usize].name.as_str());
                }
            }
            What::TakenFromQueue { agent, place: p }
            | What::PartyAdded { agent, place: p }
            | What::TakenFromWorkbin { by: Some((agent, p)) } => {
                f.push(attr::AGENT_ID, login(agent));
                f.push(attr::PLACE, place(p));
            }
            What::TakenFromWorkbin { by: None } => {}
            What::AgentInvited { agent, place: p, ticket, from_agent } => {
                f.push(attr::AGENT_ID, login(agent));
                f.push(attr::PLACE, place(p));
                f.push(attr::TICKET, *ticket as i64);
                if let Some(from) = from_agent {
                    f.push(attr::FROM_AGENT, &**from);
                }
            }
            What::InviteRevoked { agent, ticket, reason: r } => {
                f.push(attr::AGENT_ID, login(agent));
                f.push(attr::TICKET, *ticket as i64);
                f.push(attr::REASON, &**r);
            }
            What::Rejected { agent, ticket, reason: r } => {
                f.push(attr::AGENT_ID, login(agent));
                f.push(attr::TICKET, *ticket as i64);
                reason(&mut f, r);
            }
            What::PartyRemoved { agent, reason: r } => {
                f.push(attr::AGENT_ID, login(agent));
                reason(&mut f, r);
            }
            What::PropertiesChanged { changed } => {
                if !changed.is_empty() {
                    f.push(attr::PROPERTIES, changed.clone());
                }
            }
            What::Held { agent } | What::Resumed { agent } => f.push(attr::AGENT_ID, login(agent)),
            What::ProcessingStopped { reason: r } => reason(&mut f, r),
            What::AgentLogin { place: p, media: list, reason: r } => {
                f.push(attr::PLACE, place(p));
                let mut l = KvList::new();
                for (m, capacity) in list {
                    l.push(media(m), Value::Int(*capacity as i64));
                }
                f.push(attr::MEDIA_LIST, l);
                reason(&mut f, r);
            }
            What::AgentLogout { place: p, reason: r } => {
                f.push(attr::PLACE, place(p));
                f.push(attr::REASON, &**r);
            }
            What::ReadyForMedia { media: m, reason: r } | What::NotReadyForMedia { media: m, reason: r } => {
                f.push(attr::MEDIA_TYPE, media(m));
                reason(&mut f, r);
            }
            What::MediaAdded { media: m, capacity } => {
                f.push(attr::MEDIA_TYPE, media(m));
                f.push(attr::CAPACITY, *capacity as i64);
            }
            What::MediaRemoved { media: m } => f.push(attr::MEDIA_TYPE, media(m)),
        }
        f
    }
}

/// Text for an event from text the request or the server gave.
pub fn text(s: &str) -> Text {
    Arc::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Tenant, WorkbinKind};

    fn catalog() -> Catalog {
        let mut t = Tenant::new("t1");
        t.add_media("chat", true).unwrap();
        t.add_media("email", true).unwrap();
        t.add_process("bp", &["inbound", "routed"]).unwrap();
        t.add_workbin("drafts", WorkbinKind::Agent).unwrap();
        t.add_agent("a0", &[], &[("chat", 2), ("email", 1)], &[]).unwrap();
        t.add_place("p0").unwrap();
        Catalog::new(vec![t], true).unwrap()
    }

    fn layout(f: &Frame) -> Vec<(u16, Value)> {
        f.attrs.iter().map(|a| (a.id, a.value.clone())).collect()
    }

    fn s(v: &str) -> Value {
        Value::from(v)
    }

    /// The frames keep the documented layout: time, tenant, the subject's
    /// attributes, then the event's own.
    #[test]
    fn interaction_events_are_laid_out_as_documented() {
        let c = catalog();
        let e = Event {
            time: 1_700_000_000_123,
            tenant: 0,
            subject: Subject::Interaction {
                id: IxId::new("ix-1"),
                media: 1,
                at: Location::Workbin { workbin: 0, owner: text("a0") },
            },
            what: What::AgentInvited { agent: 0, place: 0, ticket: 7, from_agent: Some(text("a9")) },
        };
        let f = e.frame(&c);
        assert_eq!((f.msg_type, f.ref_id), (msg_type::EVENT_AGENT_INVITED, 0));
        assert_eq!(
            layout(&f),
            vec![
                (attr::EVENT_TIME, Value::Int(1_700_000_000_123)),
                (attr::TENANT, s("t1")),
                (attr::INTERACTION_ID, s("ix-1")),
                (attr::MEDIA_TYPE, s("email")),
                (attr::WORKBIN, s("drafts")),
                (attr::WORKBIN_OWNER, s("a0")),
                (attr::AGENT_ID, s("a0")),
                (attr::PLACE, s("p0")),
                (attr::TICKET, Value::Int(7)),
                (attr::FROM_AGENT, s("a9")),
            ]
        );
        let moved = Event {
            subject: Subject::Interaction { id: IxId::new("ix-1"), media: 0, at: Location::Queue(1) },
            what: What::PlacedInQueue { from: Some(0) },
            ..e.clone()
        };
        assert_eq!(
            layout(&moved.frame(&c))[2..],
            [
                (attr::INTERACTION_ID, s("ix-1")),
                (attr::MEDIA_TYPE, s("chat")),
                (attr::QUEUE, s("routed")),
                (attr::FROM_QUEUE, s("inbound")),
            ]
        );
        // Optional attributes are left out, not sent empty.
        let stopped = Event { what: What::ProcessingStopped { reason: None }, ..moved.clone() };
        assert_eq!(stopped.frame(&c).attrs.len(), 5);
        let changed = Event { what: What::PropertiesChanged { changed: KvList::new() }, ..moved };
        assert_eq!(changed.frame(&c).attrs.len(), 5);
    }

    #[test]
    fn agent_events_are_laid_out_as_documented() {
        let c = catalog();
        let e = Event {
            time: 5,
            tenant: 0,
            subject: Subject::Agent(0),
            what: What::AgentLogin { place: 0, media: vec![(0, 2), (1, 1)], reason: Some(text("shift")) },
        };
        let f = e.frame(&c);
        assert_eq!(f.msg_type, msg_type::EVENT_AGENT_LOGIN);
        let mut media = KvList::new();
        media.push("chat", Value::Int(2));
        media.push("email", Value::Int(1));
        assert_eq!(
            layout(&f),
            vec![
                (attr::EVENT_TIME, Value::Int(5)),
                (attr::TENANT, s("t1")),
                (attr::AGENT_ID, s("a0")),
                (attr::PLACE, s("p0")),
                (attr::MEDIA_LIST, Value::from(media)),
                (attr::REASON, s("shift")),
            ]
        );
        for (what, t) in [
            (What::DoNotDisturb { on: true }, msg_type::EVENT_DO_NOT_DISTURB_ON),
            (What::DoNotDisturb { on: false }, msg_type::EVENT_DO_NOT_DISTURB_OFF),
        ] {
            let f = Event { what, ..e.clone() }.frame(&c);
            assert_eq!((f.msg_type, f.attrs.len()), (t, 3));
        }
        assert!(e.what.about_agent());
        assert!(!What::Submitted.about_agent());
    }
}
