//! Event rows: a reporting event as the event log stores it (the outbox
//! `ixn_event_outbox` in the main database, then `rpt_interaction` or
//! `rpt_agent` in the event log's: storage/sql/*/eldb.sql).
//!
//! A row is made from the event's protocol frame ([`Event::frame`]), so the
//! log holds what a subscriber receives, attribute for attribute: the
//! attributes with a column of their own go there, the few others
//! (Properties, MediaList, Capacity) into `details` as the hex of the
//! protocol's key-value list encoding.

use std::sync::Arc;

use ixn_shard::catalog::Catalog;
use ixn_shard::event::Event;
use ixn_shard::proto::frame::Frame;
use ixn_shard::proto::msg::{attr, msg_type};
use ixn_shard::report::Published;
use ixn_shard::value::{KvList, Value};
use ixn_shard::versioned::Versioned;

use crate::records::hex_into;

/// Columns of `ixn_event_outbox` and `rpt_interaction`, in script order.
pub(crate) const EVENT_COLUMNS: [&str; 17] = [
    "generation",
    "shard",
    "seq",
    "event_time",
    "event_type",
    "tenant",
    "interaction_id",
    "media_type",
    "queue",
    "workbin",
    "workbin_owner",
    "agent",
    "place",
    "ticket",
    "from_name",
    "reason",
    "details",
];

/// Columns of `rpt_agent` (a subset of [`EVENT_COLUMNS`]), in script order.
pub(crate) const AGENT_COLUMNS: [Col; 11] = [
    Col::Generation,
    Col::Shard,
    Col::Seq,
    Col::EventTime,
    Col::EventType,
    Col::Tenant,
    Col::Agent,
    Col::Place,
    Col::MediaType,
    Col::Reason,
    Col::Details,
];

/// Every column, by its index in [`EVENT_COLUMNS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Col {
    Generation = 0,
    Shard,
    Seq,
    EventTime,
    EventType,
    Tenant,
    InteractionId,
    MediaType,
    Queue,
    Workbin,
    WorkbinOwner,
    Agent,
    Place,
    Ticket,
    FromName,
    Reason,
    Details,
}

/// All columns, in [`EVENT_COLUMNS`] order.
pub(crate) const ALL_COLUMNS: [Col; 17] = [
    Col::Generation,
    Col::Shard,
    Col::Seq,
    Col::EventTime,
    Col::EventType,
    Col::Tenant,
    Col::InteractionId,
    Col::MediaType,
    Col::Queue,
    Col::Workbin,
    Col::WorkbinOwner,
    Col::Agent,
    Col::Place,
    Col::Ticket,
    Col::FromName,
    Col::Reason,
    Col::Details,
];

/// How a column is bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// BIGINT / INT NOT NULL.
    Int,
    /// Nullable BIGINT.
    NullInt,
    /// VARCHAR(n), nullable unless it is a key column.
    Text(usize),
    /// TEXT / CLOB: the details.
    LongText,
}

impl Col {
    pub(crate) fn name(self) -> &'static str {
        EVENT_COLUMNS[self as usize]
    }

    pub(crate) fn kind(self) -> Kind {
        match self {
            Col::Generation | Col::Shard | Col::Seq | Col::EventTime => Kind::Int,
            Col::Ticket => Kind::NullInt,
            Col::EventType | Col::InteractionId => Kind::Text(64),
            Col::Details => Kind::LongText,
            _ => Kind::Text(255),
        }
    }
}

/// Number of text columns of a row (all but the ints and the details).
const TEXTS: usize = 10;

/// One event as the log stores it. Text is already cut to its column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    pub generation: i64,
    pub shard: i64,
    pub seq: i64,
    pub event_time: i64,
    pub ticket: Option<i64>,
    /// EventType, Tenant, InteractionId, MediaType, Queue, Workbin,
    /// WorkbinOwner, Agent, Place, FromName, Reason, in that order (see
    /// [`EventRow::text`]); EventType and Tenant are never `None`.
    texts: [Option<Box<str>>; TEXTS + 1],
    /// Hex of the key-value list of the attributes without a column.
    pub details: Option<Box<str>>,
}

fn text_slot(c: Col) -> usize {
    match c {
        Col::EventType => 0,
        Col::Tenant => 1,
        Col::InteractionId => 2,
        Col::MediaType => 3,
        Col::Queue => 4,
        Col::Workbin => 5,
        Col::WorkbinOwner => 6,
        Col::Agent => 7,
        Col::Place => 8,
        Col::FromName => 9,
        Col::Reason => 10,
        _ => unreachable!("{c:?} is not a text column"),
    }
}

impl EventRow {
    /// An empty row with its key, for loading into.
    pub(crate) fn keyed(generation: i64, shard: i64, seq: i64) -> EventRow {
        EventRow { generation, shard, seq, event_time: 0, ticket: None, texts: Default::default(), details: None }
    }

    /// The text of a text column.
    pub fn text(&self, c: Col) -> Option<&str> {
        self.texts[text_slot(c)].as_deref()
    }

    pub(crate) fn set_text(&mut self, c: Col, v: Option<&str>) {
        self.texts[text_slot(c)] = v.map(|s| fit(s, column_width(c)).into());
    }

    /// An integer column's value.
    pub(crate) fn int(&self, c: Col) -> Option<i64> {
        match c {
            Col::Generation => Some(self.generation),
            Col::Shard => Some(self.shard),
            Col::Seq => Some(self.seq),
            Col::EventTime => Some(self.event_time),
            Col::Ticket => self.ticket,
            _ => unreachable!("{c:?} is not an integer column"),
        }
    }

    pub(crate) fn set_int(&mut self, c: Col, v: Option<i64>) {
        let v0 = v.unwrap_or(0);
        match c {
            Col::Generation => self.generation = v0,
            Col::Shard => self.shard = v0,
            Col::Seq => self.seq = v0,
            Col::EventTime => self.event_time = v0,
            Col::Ticket => self.ticket = v,
            _ => unreachable!("{c:?} is not an integer column"),
        }
    }

    /// The event's name (EventPlacedInQueue...).
    pub fn event_type(&self) -> &str {
        self.text(Col::EventType).unwrap_or("")
    }

    /// Whether it is an agent event (a row of `rpt_agent`).
    pub fn is_agent_event(&self) -> bool {
        self.text(Col::InteractionId).is_none()
    }

    /// The interaction it is about, for an interaction event.
    pub fn interaction_id(&self) -> Option<&str> {
        self.text(Col::InteractionId)
    }

    /// The key: (generation, shard, seq).
    pub fn key(&self) -> (i64, i64, i64) {
        (self.generation, self.shard, self.seq)
    }

    /// The reporting event's frame again (reference id 0, no cursor or
    /// sequence), attributes in the documented order: what the stream sent,
    /// but for text the log cut to its column.
    pub fn frame(&self) -> Frame {
        let msg = EventFilter::event_type_of(self.event_type()).unwrap_or(0);
        let mut f = Frame::new(msg, 0).with(attr::EVENT_TIME, self.event_time);
        let text = |f: &mut Frame, id: u16, c: Col| {
            if let Some(v) = self.text(c) {
                f.push(id, v);
            }
        };
        text(&mut f, attr::TENANT, Col::Tenant);
        let details: KvList = self
            .details
            .as_deref()
            .and_then(|h| crate::records::unhex(h.as_bytes()))
            .and_then(|b| ixn_shard::proto::frame::decode_list(&b).ok())
            .unwrap_or_default();
        let detail = |f: &mut Frame, id: u16, key: &str| {
            if let Some(v) = details.get(key) {
                f.push(id, v.clone());
            }
        };
        if self.is_agent_event() {
            text(&mut f, attr::AGENT_ID, Col::Agent);
            text(&mut f, attr::PLACE, Col::Place);
            text(&mut f, attr::MEDIA_TYPE, Col::MediaType);
            detail(&mut f, attr::MEDIA_LIST, "MediaList");
            detail(&mut f, attr::CAPACITY, "Capacity");
            text(&mut f, attr::REASON, Col::Reason);
            return f;
        }
        text(&mut f, attr::INTERACTION_ID, Col::InteractionId);
        text(&mut f, attr::MEDIA_TYPE, Col::MediaType);
        text(&mut f, attr::QUEUE, Col::Queue);
        text(&mut f, attr::WORKBIN, Col::Workbin);
        text(&mut f, attr::WORKBIN_OWNER, Col::WorkbinOwner);
        text(&mut f, attr::AGENT_ID, Col::Agent);
        text(&mut f, attr::PLACE, Col::Place);
        if let Some(t) = self.ticket {
            f.push(attr::TICKET, t);
        }
        let from = if msg == msg_type::EVENT_AGENT_INVITED { attr::FROM_AGENT } else { attr::FROM_QUEUE };
        text(&mut f, from, Col::FromName);
        text(&mut f, attr::REASON, Col::Reason);
        detail(&mut f, attr::PROPERTIES, "Properties");
        f
    }
}

fn column_width(c: Col) -> usize {
    match c.kind() {
        Kind::Text(n) => n,
        _ => usize::MAX,
    }
}

/// `s` cut to at most `max` bytes at a character boundary, with any NUL
/// (which PostgreSQL cannot store) replaced.
fn fit(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].replace('\0', "\u{fffd}")
}

/// Which events the log keeps (`[logger-settings]` event-types and
/// media-types); every event by default.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Message types kept; `None`: all.
    pub event_types: Option<Vec<u16>>,
    /// Media type names kept; `None`: all. An event that names no media
    /// type (an agent's login, logout, do-not-disturb) is always kept.
    pub media_types: Option<Vec<String>>,
}

impl EventFilter {
    /// The message type of a reporting event's name (`EventAgentLogin`),
    /// for parsing `event-types`.
    pub fn event_type_of(name: &str) -> Option<u16> {
        (msg_type::EVENT_INTERACTION_SUBMITTED..=msg_type::EVENT_DO_NOT_DISTURB_OFF)
            .find(|&t| msg_type::is_reporting(t) && msg_type::name(t).eq_ignore_ascii_case(name))
    }

    fn keeps(&self, row: &EventRow, msg: u16) -> bool {
        if let Some(types) = &self.event_types {
            if !types.contains(&msg) {
                return false;
            }
        }
        match (&self.media_types, row.text(Col::MediaType)) {
            (Some(kept), Some(m)) => kept.iter().any(|k| k == m),
            _ => true,
        }
    }
}

/// What the writers need to turn events into rows.
#[derive(Debug)]
pub struct EventLogSetup {
    /// The catalog in force (a reload replaces it before any shard makes
    /// an event that names what it added).
    pub catalog: Arc<Versioned<Catalog>>,
    /// This run of the server (its start, ms): the first part of every key.
    pub generation: u64,
    pub filter: EventFilter,
    /// The event log is the main database: the writers insert each event
    /// into `rpt_interaction` / `rpt_agent` in its change's transaction
    /// (else into the outbox, which the shipper drains).
    pub direct: bool,
}

impl EventLogSetup {
    /// The row of `p`, or `None` if the filter leaves it out.
    pub fn row(&self, catalog: &Catalog, p: &Published) -> Option<EventRow> {
        let msg = p.event.what.msg_type();
        let row = row_of(&p.event, catalog, self.generation, p.shard, p.seq);
        self.filter.keeps(&row, msg).then_some(row)
    }
}

/// The row of one event, from its frame.
pub fn row_of(event: &Event, catalog: &Catalog, generation: u64, shard: u16, seq: u64) -> EventRow {
    let frame = event.frame(catalog);
    let mut row = EventRow::keyed(generation as i64, i64::from(shard), seq as i64);
    row.set_text(Col::EventType, Some(msg_type::name(frame.msg_type)));
    let mut details = KvList::new();
    for a in &frame.attrs {
        let col = match a.id {
            attr::EVENT_TIME => {
                row.event_time = int(&a.value);
                continue;
            }
            attr::TICKET => {
                row.ticket = Some(int(&a.value));
                continue;
            }
            attr::PROPERTIES => {
                details.push("Properties", a.value.clone());
                continue;
            }
            attr::MEDIA_LIST => {
                details.push("MediaList", a.value.clone());
                continue;
            }
            attr::CAPACITY => {
                details.push("Capacity", a.value.clone());
                continue;
            }
            attr::TENANT => Col::Tenant,
            attr::INTERACTION_ID => Col::InteractionId,
            attr::MEDIA_TYPE => Col::MediaType,
            attr::QUEUE => Col::Queue,
            attr::WORKBIN => Col::Workbin,
            attr::WORKBIN_OWNER => Col::WorkbinOwner,
            attr::AGENT_ID => Col::Agent,
            attr::PLACE => Col::Place,
            attr::FROM_QUEUE | attr::FROM_AGENT => Col::FromName,
            attr::REASON => Col::Reason,
            other => unreachable!("reporting event attribute {other} has no column"),
        };
        if let Value::Str(s) = &a.value {
            row.set_text(col, Some(s));
        }
    }
    if !details.is_empty() {
        let mut hex = Vec::new();
        hex_into(&ixn_shard::proto::frame::encode_list(&details), &mut hex);
        row.details = Some(String::from_utf8(hex).expect("hex is ASCII").into());
    }
    debug_assert!(row.text(Col::Tenant).is_some());
    row
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => unreachable!("an integer attribute holds {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ixn_shard::catalog::Tenant;
    use ixn_shard::event::{text, Location, Subject, What};
    use ixn_shard::interaction::IxId;

    fn catalog() -> Catalog {
        let mut t = Tenant::new("t1");
        t.add_media("chat", true).unwrap();
        t.add_media("email", true).unwrap();
        t.add_process("bp", &["inbound", "routed"]).unwrap();
        t.add_agent("a0", &[], &[("chat", 2), ("email", 1)], &[]).unwrap();
        t.add_place("p0").unwrap();
        Catalog::new(vec![t], true).unwrap()
    }

    #[test]
    fn every_column_is_named_once_in_script_order() {
        for (i, c) in ALL_COLUMNS.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        let script = include_str!("../sql/sqlite/eldb.sql");
        let interaction = &script[script.find("CREATE TABLE rpt_interaction").unwrap()..];
        let interaction = &interaction[..interaction.find(");").unwrap()];
        let names: Vec<&str> = interaction
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| *w != "PRIMARY")
            .collect();
        assert_eq!(names, EVENT_COLUMNS);
        let agent = &script[script.find("CREATE TABLE rpt_agent").unwrap()..];
        let agent = &agent[..agent.find(");").unwrap()];
        let names: Vec<&str> =
            agent.lines().skip(1).filter_map(|l| l.split_whitespace().next()).filter(|w| *w != "PRIMARY").collect();
        assert_eq!(names, AGENT_COLUMNS.map(Col::name));
    }

    #[test]
    fn an_invitation_fills_its_columns() {
        let c = catalog();
        let e = Event {
            time: 1_700_000_000_123,
            tenant: 0,
            subject: Subject::Interaction { id: IxId::new("ix-1"), media: 1, at: Location::Queue(1) },
            what: What::AgentInvited { agent: 0, place: 0, ticket: 7, from_agent: Some(text("a9")) },
        };
        let r = row_of(&e, &c, 42, 1, 9);
        assert_eq!(r.key(), (42, 1, 9));
        assert_eq!(r.event_time, 1_700_000_000_123);
        assert_eq!(r.event_type(), "EventAgentInvited");
        assert_eq!(r.ticket, Some(7));
        let t = |c| r.text(c);
        assert_eq!(
            [t(Col::Tenant), t(Col::InteractionId), t(Col::MediaType), t(Col::Queue), t(Col::Workbin)],
            [Some("t1"), Some("ix-1"), Some("email"), Some("routed"), None]
        );
        assert_eq!([t(Col::Agent), t(Col::Place), t(Col::FromName)], [Some("a0"), Some("p0"), Some("a9")]);
        assert_eq!(r.details, None);
        assert!(!r.is_agent_event());
    }

    #[test]
    fn a_login_keeps_its_media_list_in_the_details() {
        let c = catalog();
        let e = Event {
            time: 5,
            tenant: 0,
            subject: Subject::Agent(0),
            what: What::AgentLogin { place: 0, media: vec![(0, 2)], reason: Some(text(&"r".repeat(300))) },
        };
        let r = row_of(&e, &c, 1, 0, 1);
        assert!(r.is_agent_event());
        assert_eq!(r.text(Col::Agent), Some("a0"));
        assert_eq!(r.text(Col::Reason).map(str::len), Some(255), "cut to the column");
        let hex = r.details.as_deref().unwrap();
        let bytes = crate::records::unhex(hex.as_bytes()).unwrap();
        let list = ixn_shard::proto::frame::decode_list(&bytes).unwrap();
        let mut media = KvList::new();
        media.push("chat", Value::Int(2));
        let mut want = KvList::new();
        want.push("MediaList", Value::from(media));
        assert_eq!(list, want);
    }

    /// A row gives back the frame it was made from, attribute for
    /// attribute, for every kind of event.
    #[test]
    fn a_row_gives_back_its_frame() {
        let c = catalog();
        let ix = |at, what| Event {
            time: 9,
            tenant: 0,
            subject: Subject::Interaction { id: IxId::new("ix-1"), media: 1, at },
            what,
        };
        let agent = |what| Event { time: 9, tenant: 0, subject: Subject::Agent(0), what };
        let mut props = KvList::new();
        props.push("k", Value::Int(3));
        let events = [
            ix(Location::Queue(1), What::Submitted),
            ix(Location::Queue(1), What::PlacedInQueue { from: Some(0) }),
            ix(Location::Queue(1), What::AgentInvited { agent: 0, place: 0, ticket: 4, from_agent: Some(text("a9")) }),
            ix(Location::Queue(1), What::InviteRevoked { agent: 0, ticket: 4, reason: text("timeout") }),
            ix(Location::Queue(1), What::PartyRemoved { agent: 0, reason: None }),
            ix(Location::Queue(1), What::PropertiesChanged { changed: props }),
            ix(Location::Queue(0), What::ProcessingStopped { reason: Some(text("done")) }),
            agent(What::AgentLogin { place: 0, media: vec![(0, 2), (1, 1)], reason: Some(text("shift")) }),
            agent(What::AgentLogout { place: 0, reason: text("bye") }),
            agent(What::ReadyForMedia { media: 1, reason: None }),
            agent(What::MediaAdded { media: 0, capacity: 3 }),
            agent(What::DoNotDisturb { on: true }),
        ];
        for e in events {
            let row = row_of(&e, &c, 1, 0, 1);
            assert_eq!(row.frame(), e.frame(&c), "{:?}", e.what);
        }
    }

    #[test]
    fn the_filter_keeps_named_types_and_media() {
        let c = catalog();
        let ready = Event {
            time: 5,
            tenant: 0,
            subject: Subject::Agent(0),
            what: What::ReadyForMedia { media: 1, reason: None },
        };
        let logout = Event { what: What::AgentLogout { place: 0, reason: text("bye") }, ..ready.clone() };
        let setup = |filter| EventLogSetup {
            catalog: Arc::new(Versioned::new(Arc::new(c.clone()))),
            generation: 1,
            filter,
            direct: false,
        };
        let p = |e: &Event| Published { shard: 0, seq: 1, event: e.clone() };
        let all = setup(EventFilter::default());
        assert!(all.row(&c, &p(&ready)).is_some() && all.row(&c, &p(&logout)).is_some());
        let chat = setup(EventFilter { event_types: None, media_types: Some(vec!["chat".into()]) });
        assert!(chat.row(&c, &p(&ready)).is_none(), "email is left out");
        assert!(chat.row(&c, &p(&logout)).is_some(), "names no media type");
        let t = EventFilter::event_type_of("eventagentlogout").unwrap();
        let logouts = setup(EventFilter { event_types: Some(vec![t]), media_types: None });
        assert!(logouts.row(&c, &p(&ready)).is_none() && logouts.row(&c, &p(&logout)).is_some());
        assert_eq!(EventFilter::event_type_of("RequestSubmit"), None);
    }
}
