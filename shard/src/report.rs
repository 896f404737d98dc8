//! The reporting stream: every state change of an interaction or an agent
//! as a typed event (event.rs), numbered by the shard that made it, sent
//! to the subscribed reporting clients, and kept for a while so that a
//! subscriber that lost its connection resumes where it stopped.
//!
//! **Numbering.** Each shard numbers its events 1, 2, 3... in the order it
//! makes them, and releases them in that order: an event waits until every
//! earlier one of its shard is settled. An event made with a write (a
//! change that is stored) settles when the write completes: it is released
//! if the change stands, dropped if it was undone (its number is then never
//! sent: numbers may have gaps, never reorderings). An event of a change
//! that is not stored (an invitation, an agent's state) is settled at once,
//! but still waits for the earlier ones. So a subscriber receives each
//! shard's events in number order, and a cursor (the last number received
//! from each shard) says exactly what it has seen. An interaction's events
//! all come from its owner and an agent's from its home, and channels
//! between two shards are FIFO, so each interaction's and each agent's
//! events arrive in the order they happened.
//!
//! **Resuming.** A shard keeps its last `replay_events` released events.
//! A subscription names, per shard, the number after which it wants events
//! (its cursor, or the shard's latest number for a new subscription). It is
//! set up in two rounds so that it starts everywhere or nowhere: every shard
//! first checks it still keeps what the cursor needs and pins it (no event
//! after the cursor is dropped from the kept ones meanwhile); then, if all
//! can, each sends what it kept after the cursor and goes live.
//!
//! A slow subscriber is handled like any slow client (invariant 6): its
//! connection's output buffer is bounded and it is disconnected past it;
//! it resumes with its last cursor.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use ahash::{AHashMap, AHashSet};

use crate::agent::AgentRef;
use crate::catalog::TenantIdx;
use crate::event::{text, Event, Location, Subject, What};
use crate::interaction::{Interaction, IxId, Millis, Place};
use crate::machine::{Caller, Origin, Output, Shard, StoreOp};
use crate::peer::PeerMsg;
use crate::proto::frame::Frame;
use crate::proto::msg::{attr, msg_type, ClientType, ErrorCode};
use crate::proto::request::{event_ack, event_error, ProtoError};
use crate::store::Slot;
use crate::tally::{AgentView, MediaView, ShardState, Tally};
use crate::value::{KvList, Value};

/// An event with its number on the shard that made it.
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    pub shard: u16,
    /// 1, 2, 3... per shard and per run of the server.
    pub seq: u64,
    pub event: Event,
}

/// Where an event stands before its release. Numbered already: the
/// same event goes to the event log (with its write) and to subscribers.
#[derive(Debug)]
enum Unreleased {
    /// Made with a write: released when it commits, dropped if undone.
    Waiting(Arc<Published>),
    Ready(Arc<Published>),
    Dropped,
}

/// What becomes of the events a write carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settle {
    /// The change stands: release them.
    Release,
    /// The change was undone: they never happened.
    Drop,
}

/// A subscription on one shard: live, or being set up.
#[derive(Clone, Copy, Debug)]
struct Sub {
    origin: Origin,
    tenant: Option<TenantIdx>,
    /// The subscription (its coordinator's op), on every event sent for
    /// it: a connection that subscribed again drops the old one's events
    /// still on their way.
    op: u64,
}

/// A subscription between the two rounds of its setting up: the events
/// after `after` stay kept until it goes live or is given up.
#[derive(Clone, Copy, Debug)]
struct Pinned {
    sub: Sub,
    after: u64,
}

/// The reporter of one shard: numbers, orders, keeps and sends events.
#[derive(Debug)]
pub struct Reporter {
    shard: u16,
    /// Whether the event log is on: every event is made, and goes to the
    /// database with a write (docs/architecture.md, "The event log").
    log: bool,
    /// How many released events are kept for resuming subscribers (0:
    /// none, and events are made only while someone subscribes).
    keep: usize,
    /// Events made and not yet released, numbered `released + 1` on.
    unreleased: VecDeque<Unreleased>,
    /// The number of the last event released (sent, or dropped).
    released: u64,
    /// The numbers of the events each write carries (made together, so
    /// consecutive).
    by_token: AHashMap<u64, Range<u64>>,
    /// The last `keep` events released (dropped ones are not kept).
    kept: VecDeque<Arc<Published>>,
    /// The number of the last released event no longer kept: every event
    /// after it that was sent is in `kept`.
    forgotten: u64,
    /// Live subscriptions of the node (every shard knows every one).
    live: Vec<Sub>,
    /// Subscriptions being set up, by (coordinating shard, op).
    pinned: AHashMap<(u16, u64), Pinned>,
    /// Connections of this shard that subscribed (it coordinates their
    /// subscriptions).
    subscribed_here: AHashSet<Origin>,
    /// Subscriptions of this shard's connections being set up, by op.
    pending_subs: AHashMap<u64, PendingSubscribe>,
    /// Whether anyone subscribed since the server started: from then on
    /// events are made and kept even while no one subscribes, so that a
    /// subscriber can resume; before, no one could have a cursor.
    subscribed_once: bool,
    /// Agents' states and queue depths as of the last released event.
    pub(crate) tally: Tally,
    /// Reads of the event log in flight, for resuming subscriptions: the
    /// read's token and the subscription's op.
    pub(crate) log_reads: AHashMap<u64, u64>,
}

impl Reporter {
    pub fn new(shard: u16, keep: usize, log: bool, catalog: &crate::catalog::Catalog) -> Self {
        let mut tally = Tally::new(catalog);
        if log {
            // Every event is made from the start: the tally follows them
            // from the (empty) state before the first load.
            tally.start_empty();
        }
        Reporter {
            tally,
            log_reads: AHashMap::new(),
            shard,
            log,
            keep,
            unreleased: VecDeque::new(),
            released: 0,
            by_token: AHashMap::new(),
            kept: VecDeque::new(),
            forgotten: 0,
            live: Vec::new(),
            pinned: AHashMap::new(),
            subscribed_here: AHashSet::new(),
            pending_subs: AHashMap::new(),
            subscribed_once: false,
        }
    }

    /// Whether events of `tenant` are to be made: always while the event
    /// log is on; else while someone subscribes to it, and, once anyone
    /// subscribed, always while events are kept for resuming. A server
    /// with no event log that no one ever subscribed to makes none.
    pub(crate) fn wants(&self, tenant: TenantIdx) -> bool {
        let covers = |s: &Sub| s.tenant.is_none_or(|t| t == tenant);
        self.log
            || (self.keep > 0 && self.subscribed_once)
            || self.live.iter().any(covers)
            || self.pinned.values().any(|p| covers(&p.sub))
    }

    /// Whether the write `token` carries events not settled yet.
    pub(crate) fn holds(&self, token: u64) -> bool {
        self.by_token.contains_key(&token)
    }

    /// Events made and not yet released.
    pub fn unreleased(&self) -> usize {
        self.unreleased.len()
    }

    /// Whether the event log is on.
    pub(crate) fn logging(&self) -> bool {
        self.log
    }

    /// An event of a change that is not stored: sent after every earlier
    /// one. With the event log on, such an event is held with a write of
    /// its own instead (see `Shard::emit`).
    pub(crate) fn publish(&mut self, event: Event, out: &mut Vec<Output>) {
        debug_assert!(!self.log, "an event published past the event log");
        let seq = self.released + self.unreleased.len() as u64 + 1;
        self.unreleased.push_back(Unreleased::Ready(Arc::new(Published { shard: self.shard, seq, event })));
        self.release(out);
    }

    /// Events a write carries: numbered now, sent when it settles. Returns
    /// what the write stores in the event log: the events, with the log on;
    /// nothing, with it off.
    pub(crate) fn hold(&mut self, token: u64, events: Vec<Event>) -> Vec<Arc<Published>> {
        if events.is_empty() {
            return Vec::new();
        }
        let first = self.released + self.unreleased.len() as u64 + 1;
        let mut logged = Vec::new();
        for (seq, event) in (first..).zip(events) {
            let p = Arc::new(Published { shard: self.shard, seq, event });
            if self.log {
                logged.push(p.clone());
            }
            self.unreleased.push_back(Unreleased::Waiting(p));
        }
        let next = self.released + self.unreleased.len() as u64 + 1;
        let before = self.by_token.insert(token, first..next);
        assert!(before.is_none(), "events held twice for write {token}");
        logged
    }

    /// With the event log on, the events write `token` carries and that
    /// wait for it (none with the log off).
    pub(crate) fn held_for_log(&self, token: u64) -> Vec<Arc<Published>> {
        let Some(seqs) = self.by_token.get(&token).filter(|_| self.log) else { return Vec::new() };
        seqs.clone()
            .filter_map(|seq| match &self.unreleased[(seq - self.released - 1) as usize] {
                Unreleased::Waiting(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    /// The events write `token` carries of interaction `id` say it is at
    /// `at`: they were made after a change that has since failed, where
    /// that change had put the interaction.
    pub(crate) fn relocate(&mut self, token: u64, id: &IxId, at: &Location) {
        let Some(seqs) = self.by_token.get(&token) else { return };
        for seq in seqs.clone() {
            let Unreleased::Waiting(p) = &mut self.unreleased[(seq - self.released - 1) as usize] else { continue };
            let Subject::Interaction { id: of, at: was, .. } = &p.event.subject else { continue };
            if of != id || was == at {
                continue;
            }
            let mut event = p.event.clone();
            if let Subject::Interaction { at: was, .. } = &mut event.subject {
                *was = at.clone();
            }
            *p = Arc::new(Published { shard: p.shard, seq: p.seq, event });
        }
    }

    /// The events write `from` carries wait for write `to` instead.
    pub(crate) fn move_hold(&mut self, from: u64, to: u64) {
        if let Some(seqs) = self.by_token.remove(&from) {
            let before = self.by_token.insert(to, seqs);
            assert!(before.is_none(), "events held twice for write {to}");
        }
    }

    /// The write `token` completed: its events go out or are dropped. A
    /// write that carried none, or was settled already, changes nothing.
    pub(crate) fn settle(&mut self, token: u64, how: Settle, out: &mut Vec<Output>) {
        let Some(seqs) = self.by_token.remove(&token) else { return };
        for seq in seqs {
            let at = (seq - self.released - 1) as usize;
            let entry = &mut self.unreleased[at];
            let Unreleased::Waiting(p) = std::mem::replace(entry, Unreleased::Dropped) else {
                panic!("event {seq} of write {token} settled twice");
            };
            debug_assert_eq!(p.seq, seq);
            if how == Settle::Release {
                *entry = Unreleased::Ready(p);
            }
        }
        self.release(out);
    }

    /// Sends every settled event at the head, in number order.
    fn release(&mut self, out: &mut Vec<Output>) {
        while matches!(self.unreleased.front(), Some(Unreleased::Ready(_) | Unreleased::Dropped)) {
            let seq = self.released + 1;
            self.released = seq;
            let Some(Unreleased::Ready(p)) = self.unreleased.pop_front() else { continue };
            debug_assert_eq!(p.seq, seq);
            self.tally.apply(&p.event);
            for s in &self.live {
                if s.tenant.is_none_or(|t| t == p.event.tenant) {
                    out.push(Output::Report { origin: s.origin, sub: s.op, event: p.clone() });
                }
            }
            if self.keep > 0 {
                self.kept.push_back(p);
                self.trim();
            } else {
                self.forgotten = seq;
            }
        }
    }

    /// Drops kept events past `keep`, but none a subscription being set
    /// up still needs.
    fn trim(&mut self) {
        if self.kept.len() <= self.keep {
            return;
        }
        let needed = self.pinned.values().map(|p| p.after + 1).min().unwrap_or(u64::MAX);
        while self.kept.len() > self.keep && self.kept.front().is_some_and(|e| e.seq < needed) {
            let e = self.kept.pop_front().expect("checked");
            self.forgotten = e.seq;
        }
    }

    /// First round of a subscription: whether every event after `after`
    /// (none given: from now) can still be sent; if so, pins them and
    /// returns the number the subscription starts after.
    fn pin(&mut self, key: (u16, u64), sub: Sub, after: Option<u64>) -> Option<u64> {
        let after = match after {
            None => self.released,
            // Ahead of what this shard ever released: not a cursor of it.
            Some(a) if a > self.released => return None,
            // Everything sent after `a` is still kept.
            Some(a) if a >= self.forgotten => a,
            Some(_) => return None,
        };
        self.pinned.insert(key, Pinned { sub, after });
        self.subscribed_once = true;
        Some(after)
    }

    /// Second round: sends what was kept after the pinned number and goes
    /// live; or, if the subscription is given up, forgets it.
    fn go(&mut self, key: (u16, u64), go: bool, out: &mut Vec<Output>) {
        let Some(p) = self.pinned.remove(&key) else { return };
        if go {
            let events: Vec<Arc<Published>> = self
                .kept
                .iter()
                .filter(|e| e.seq > p.after && p.sub.tenant.is_none_or(|t| t == e.event.tenant))
                .cloned()
                .collect();
            if !events.is_empty() {
                out.push(Output::Replay { origin: p.sub.origin, sub: p.sub.op, events });
            }
            self.live.retain(|s| s.origin != p.sub.origin);
            self.live.push(p.sub);
        }
        self.trim();
    }

    fn remove(&mut self, origin: Origin) {
        self.live.retain(|s| s.origin != origin);
        self.pinned.retain(|_, p| p.sub.origin != origin);
        self.trim();
    }
}

/// The key an agent's events are written under when no interaction row
/// changes with them: it names the writer (and batch entry) they go to.
fn agent_log_key(tenant: TenantIdx, agent: crate::catalog::AgentIdx) -> String {
    format!("agent {tenant}/{agent}")
}

/// Whether event `seq` of shard `shard` in run `generation` comes after
/// cursor `after` (of an earlier run; a shard it does not name counts
/// from 0) and at most at `upto` (of this run), every run in between
/// whole: what a resume from the event log sends.
pub fn in_log_range(after: &Cursor, upto: &Cursor, generation: u64, shard: usize, seq: u64) -> bool {
    let nth = |v: &[u64]| v.get(shard).copied();
    if generation == after.generation {
        seq > nth(&after.seqs).unwrap_or(0)
    } else if generation == upto.generation {
        nth(&upto.seqs).is_some_and(|u| seq <= u)
    } else {
        generation > after.generation && generation < upto.generation
    }
}

/// In a first-round Subscribe: start after the oldest event the shard
/// still keeps (a resume from the event log).
const FROM_OLDEST: u64 = u64::MAX;

impl Shard {
    /// The event log was read for a resuming subscription (`ok`: the
    /// executor has its events): they go to the connection, then the
    /// second round as for any resume. Not read: nothing subscribes.
    pub(crate) fn log_read(&mut self, token: u64, ok: bool, out: &mut Vec<Output>) {
        let Some(op) = self.reporter.log_reads.remove(&token) else { return };
        let Some(p) = self.reporter.pending_subs.get_mut(&op) else { return };
        let origin = p.caller.origin;
        let shards = self.params.shards;
        if ok {
            let upto = p.upto.take().expect("a read names where it stops");
            let (after, tenant) = p.from_log.clone().expect("a resume from the event log");
            p.going = true;
            p.waiting = shards;
            out.push(Output::SendLog { origin, sub: op, token, tenant, after });
            out.push(Output::Cursor { origin, sub: op, cursor: upto });
        } else {
            let p = self.reporter.pending_subs.remove(&op).expect("present");
            self.reporter.subscribed_here.remove(&origin);
            let e = ProtoError::new(
                ErrorCode::CursorExpired,
                "the event log could not give every event after this cursor (it could not be read, or holds more \
                 than a resume may send); subscribe without one and read the state again",
            );
            out.push(Output::Reply { origin, frame: event_error(p.caller.ref_id, &e) });
        }
        for to in 0..shards {
            out.push(Output::Peer { to, msg: PeerMsg::SubscribeGo { op, go: ok } });
        }
    }
}

/// A subscription its coordinator (the subscriber's shard) is setting up.
#[derive(Clone, Debug)]
pub(crate) struct PendingSubscribe {
    pub caller: Caller,
    /// The shards' states added up, when the subscription asked for it.
    pub state: Option<ShardState>,
    /// Shards yet to answer the current round.
    pub waiting: u16,
    /// The number each shard starts after (first round's answers).
    pub starts: Vec<Option<u64>>,
    /// Whether the first round is over.
    pub going: bool,
    /// Resuming from the event log: the cursor of an earlier run, and the
    /// subscription's tenant.
    pub from_log: Option<(Cursor, Option<TenantIdx>)>,
    /// While the event log is read: where this run's kept events take over.
    pub upto: Option<Cursor>,
}

/// The most numbers a cursor of an earlier run may hold (as many as a
/// server may have shards).
const MAX_CURSOR_SHARDS: usize = 1024;

/// A cursor: the run of the server, and the number of the last event
/// received from each shard. Its text form is `G:N0,N1,...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub generation: u64,
    pub seqs: Vec<u64>,
}

impl Cursor {
    pub fn parse(s: &str) -> Option<Cursor> {
        let (g, rest) = s.split_once(':')?;
        let generation = g.parse().ok()?;
        let seqs = rest.split(',').map(|n| n.parse().ok()).collect::<Option<Vec<u64>>>()?;
        Some(Cursor { generation, seqs })
    }

    /// The text form, written into `buf`.
    pub fn write(&self, buf: &mut String) {
        use std::fmt::Write;
        let _ = write!(buf, "{}:", self.generation);
        for (i, n) in self.seqs.iter().enumerate() {
            let _ = write!(buf, "{}{n}", if i == 0 { "" } else { "," });
        }
    }
}

impl Shard {
    /// Starts the tally from memory, when events start being made for
    /// every tenant (a first subscription). Memory is then the state as of
    /// the last released number, with one difference the tally makes up
    /// for: a submission whose write is in flight is in its queue but not
    /// counted there yet, and will make no event when it commits (none was
    /// made for it). (A change in flight that then fails is undone in
    /// memory without an event: the tally keeps it. Changes fail only when
    /// the database refuses them.)
    pub(crate) fn start_tally(&mut self) {
        let mut depth: Vec<Vec<i64>> = (0..self.catalog.tenants.len())
            .map(|t| self.index.queue_counts(t as TenantIdx).iter().map(|c| c.interactions as i64).collect())
            .collect();
        for tie in self.submits_in_flight() {
            if let Some(slot) = self.store.find_tie(tie) {
                let ix = self.store.get(slot);
                if let (Place::Queue(q), false) = (ix.place, ix.visible) {
                    depth[ix.tenant as usize][q as usize] += 1;
                }
            }
        }
        let agents = self
            .homes
            .iter()
            .filter_map(|(a, st)| {
                let l = st.login.as_ref()?;
                let media = l
                    .media
                    .iter()
                    .map(|m| MediaView { media: m.media, capacity: m.capacity, ready: m.ready })
                    .collect();
                Some(((a.tenant, a.agent), AgentView { place: l.place, dnd: l.dnd, media }))
            })
            .collect();
        self.reporter.tally.start(depth, agents);
    }

    /// EventReportingState frames for `state`: one AgentState list per
    /// logged-in agent, then one QueueDepth list per queue, each frame
    /// inside max-frame-size; the last carries the cursor the state is as
    /// of.
    fn state_frames(&self, state: &ShardState, cursor: &Cursor) -> Vec<Frame> {
        let room = self.params.max_frame.saturating_sub(1024).max(1024);
        let mut frames = Vec::new();
        let mut f = Frame::new(msg_type::EVENT_REPORTING_STATE, 0);
        let mut used = 0;
        let mut add = |id: u16, l: KvList, frames: &mut Vec<Frame>, f: &mut Frame| {
            let size = crate::proto::frame::encoded_list_len(&l) + 8;
            if used + size > room && !f.attrs.is_empty() {
                frames.push(std::mem::replace(f, Frame::new(msg_type::EVENT_REPORTING_STATE, 0)));
                used = 0;
            }
            used += size;
            f.push(id, l);
        };
        for ((t, a), view) in &state.agents {
            let tenant = self.catalog.tenant_at(*t);
            let mut l = KvList::new();
            l.push("agent_id", Value::Str(tenant.agents[*a as usize].login_id.clone()));
            l.push("tenant", Value::Str(tenant.name.clone()));
            l.push("state", Value::Str("logged-in".into()));
            l.push("place", Value::Str(tenant.places[view.place as usize].name.clone()));
            l.push("do_not_disturb", Value::Int(view.dnd as i64));
            let mut media = KvList::new();
            for m in &view.media {
                let mut e = KvList::new();
                e.push("capacity", Value::Int(m.capacity as i64));
                e.push("ready", Value::Int(m.ready as i64));
                media.push(tenant.media[m.media as usize].name.as_str(), Value::List(e));
            }
            l.push("media", Value::List(media));
            add(attr::AGENT_STATE, l, &mut frames, &mut f);
        }
        for (t, queues) in state.depth.iter().enumerate() {
            let tenant = self.catalog.tenant_at(t as TenantIdx);
            for (q, n) in queues.iter().enumerate() {
                let mut l = KvList::new();
                l.push("tenant", Value::Str(tenant.name.clone()));
                l.push("queue", Value::Str(tenant.queues[q].name.clone()));
                l.push("interactions", Value::Int(*n as i64));
                add(attr::QUEUE_DEPTH, l, &mut frames, &mut f);
            }
        }
        let mut text = String::new();
        cursor.write(&mut text);
        f.push(attr::EVENT_CURSOR, text);
        frames.push(f);
        frames
    }

    /// Whether events of `tenant` are to be made.
    pub(crate) fn reporting(&self, tenant: TenantIdx) -> bool {
        self.reporter.wants(tenant)
    }

    /// Sends `event`, of a change that is not stored, to the subscribers
    /// of its tenant, after every earlier event of this shard. With the
    /// event log on, it is first written to the log on its own (keyed by
    /// its subject, so it goes with that interaction's writes), and sent
    /// once that write completes, whatever its outcome: the change it
    /// reports stands.
    pub(crate) fn emit(&mut self, event: Event, out: &mut Vec<Output>) {
        if !self.reporter.logging() {
            self.reporter.publish(event, out);
            return;
        }
        let key = match &event.subject {
            Subject::Interaction { id, .. } => id.to_string(),
            Subject::Agent(a) => agent_log_key(event.tenant, *a),
        };
        let token = self.new_token();
        let log = self.reporter.hold(token, vec![event]);
        self.log_only.insert(token);
        out.push(Output::Store { token, op: StoreOp::Log(key), log });
    }

    /// Reports an agent event; `what` is made only if events are wanted.
    pub(crate) fn report_agent(
        &mut self,
        now_ms: Millis,
        a: AgentRef,
        what: impl FnOnce() -> What,
        out: &mut Vec<Output>,
    ) {
        if !self.reporting(a.tenant) {
            return;
        }
        self.emit(Event { time: now_ms, tenant: a.tenant, subject: Subject::Agent(a.agent), what: what() }, out);
    }

    /// Where an event says `ix` is.
    pub(crate) fn location_of(&self, ix: &Interaction) -> Location {
        match ix.place {
            Place::Queue(q) => Location::Queue(q),
            Place::Workbin { workbin, owner } => Location::Workbin { workbin, owner: text(self.syms.name(owner)) },
        }
    }

    /// An interaction event, made only if events are wanted.
    pub(crate) fn ix_event(&self, now_ms: Millis, slot: Slot, what: impl FnOnce() -> What) -> Option<Event> {
        let ix = self.store.get(slot);
        if !self.reporting(ix.tenant) {
            return None;
        }
        let at = self.location_of(ix);
        Some(Event {
            time: now_ms,
            tenant: ix.tenant,
            subject: Subject::Interaction { id: ix.id.clone(), media: ix.media, at },
            what: what(),
        })
    }

    /// Reports an interaction event of a change that is not stored. Its
    /// number puts it after the events of the interaction's writes in
    /// flight, so each interaction's events keep their order.
    pub(crate) fn report_ix(&mut self, now_ms: Millis, slot: Slot, what: impl FnOnce() -> What, out: &mut Vec<Output>) {
        if let Some(e) = self.ix_event(now_ms, slot, what) {
            self.emit(e, out);
        }
    }

    /// Sends `o`, an event about the interaction at `slot` to an agent's
    /// desktop, after the answer of that interaction's write in flight, if
    /// any.
    pub(crate) fn send_ordered(&mut self, slot: Slot, o: Output, out: &mut Vec<Output>) {
        let id = &self.store.get(slot).id;
        match self.last_write.get(id).and_then(|t| self.pending.get_mut(t)) {
            Some(p) => p.after.push(o),
            None => out.push(o),
        }
    }

    /// RequestSubscribe, on the subscriber's shard. First round: every
    /// shard checks it can start where the cursor says and pins that.
    pub(crate) fn subscribe(
        &mut self,
        caller: &Caller,
        tenant: Option<&str>,
        cursor: Option<&str>,
        with_state: bool,
        out: &mut Vec<Output>,
    ) -> Result<Option<Frame>, ProtoError> {
        if !matches!(caller.client_type, ClientType::ReportingEngine | ClientType::Operator | ClientType::Proxy) {
            return Err(ProtoError::new(
                ErrorCode::NotPermitted,
                format!("a {} client may not subscribe to reporting events", caller.client_type.name()),
            ));
        }
        // The cursor it emits must reach the connection before any event
        // of the subscription: on its own shard it is handed over at once,
        // ahead of the second round's messages.
        assert_eq!(caller.origin.shard, self.params.shard, "a subscription coordinated away from its connection");
        let tenant = tenant.map(|t| self.tenant_idx(t)).transpose()?;
        let cursor = cursor.map(|c| self.check_cursor(c)).transpose()?;
        if with_state && cursor.is_some() {
            return Err(ProtoError::new(
                ErrorCode::InvalidValue,
                "WithState starts a new subscription from the current state; a resumed one (EventCursor) has had it",
            ));
        }
        if with_state && self.params.replay_events == 0 && !self.reporter.logging() {
            return Err(ProtoError::new(
                ErrorCode::NotPermitted,
                "this server keeps no events (reporting-replay-events = 0, no event log), so it keeps no state \
                 consistent with them: WithState is not available",
            ));
        }
        if self.reporter.subscribed_here.contains(&caller.origin) {
            return Err(ProtoError::new(ErrorCode::InvalidState, "this connection is already subscribed"));
        }
        self.reporter.subscribed_here.insert(caller.origin);
        let op = self.next_op;
        self.next_op += 1;
        let shards = self.params.shards;
        // A cursor of an earlier run: the event log has what it missed up
        // to where this run's kept events take over (each shard's oldest).
        let from_log = cursor.as_ref().filter(|c| c.generation != self.params.generation).map(|c| (c.clone(), tenant));
        let p = PendingSubscribe {
            caller: caller.clone(),
            from_log: from_log.clone(),
            upto: None,
            state: with_state.then(ShardState::default),
            waiting: shards,
            starts: vec![None; shards as usize],
            going: false,
        };
        self.reporter.pending_subs.insert(op, p);
        for to in 0..shards {
            let after = match (&cursor, &from_log) {
                (_, Some(_)) => Some(FROM_OLDEST),
                (Some(c), None) => Some(c.seqs[to as usize]),
                (None, None) => None,
            };
            let msg = PeerMsg::Subscribe { op, origin: caller.origin, tenant, after, with_state };
            out.push(Output::Peer { to, msg });
        }
        Ok(None)
    }

    fn check_cursor(&self, text: &str) -> Result<Cursor, ProtoError> {
        let c = Cursor::parse(text).ok_or_else(|| {
            ProtoError::new(ErrorCode::InvalidValue, format!("EventCursor '{text}' is not a cursor this server gave"))
        })?;
        if c.generation != self.params.generation {
            // With the event log on, what an earlier run sent is in it.
            if self.reporter.logging() && c.generation < self.params.generation && c.seqs.len() <= MAX_CURSOR_SHARDS {
                return Ok(c);
            }
            return Err(ProtoError::new(
                ErrorCode::CursorExpired,
                "the cursor is from an earlier run of the server, whose events are not kept (the event log is off); \
                 subscribe without one and read the state again",
            ));
        }
        if c.seqs.len() != self.params.shards as usize {
            return Err(ProtoError::new(
                ErrorCode::InvalidValue,
                format!(
                    "EventCursor '{text}' has {} numbers; this server has {} shards",
                    c.seqs.len(),
                    self.params.shards
                ),
            ));
        }
        Ok(c)
    }

    /// Every shard's side of both rounds, and the end of a subscription.
    pub(crate) fn handle_subscription(&mut self, from: u16, msg: PeerMsg, out: &mut Vec<Output>) {
        match msg {
            PeerMsg::Subscribe { op, origin, tenant, after, with_state } => {
                if !self.reporter.tally.is_active() && (with_state || self.params.replay_events > 0) {
                    self.start_tally();
                }
                let after = if after == Some(FROM_OLDEST) { Some(self.reporter.forgotten) } else { after };
                let start = self.reporter.pin((from, op), Sub { origin, tenant, op }, after);
                let state = (with_state && start.is_some()).then(|| Box::new(self.reporter.tally.state(tenant)));
                out.push(Output::Peer { to: from, msg: PeerMsg::Subscribed { op, start, state } });
            }
            PeerMsg::Subscribed { op, start, state } => self.subscribed(from, op, start, state, out),
            PeerMsg::SubscribeGo { op, go } => {
                self.reporter.go((from, op), go, out);
                if go {
                    out.push(Output::Peer { to: from, msg: PeerMsg::SubscribeLive { op } });
                }
            }
            PeerMsg::SubscribeLive { op } => {
                let Some(p) = self.reporter.pending_subs.get_mut(&op) else { return };
                p.waiting -= 1;
                if p.waiting == 0 {
                    let p = self.reporter.pending_subs.remove(&op).expect("present");
                    out.push(Output::Reply { origin: p.caller.origin, frame: event_ack(p.caller.ref_id) });
                }
            }
            PeerMsg::Unsubscribe { origin } => self.reporter.remove(origin),
            other => unreachable!("not a subscription message: {other:?}"),
        }
    }

    /// The coordinator hears a shard's first-round answer; with all of
    /// them, it starts the subscriber's cursor and the second round.
    fn subscribed(
        &mut self,
        from: u16,
        op: u64,
        start: Option<u64>,
        state: Option<Box<ShardState>>,
        out: &mut Vec<Output>,
    ) {
        let Some(p) = self.reporter.pending_subs.get_mut(&op) else { return };
        assert!(!p.going, "a first-round answer after the first round");
        p.starts[from as usize] = start;
        if let (Some(sum), Some(part)) = (p.state.as_mut(), state) {
            sum.add(*part);
        }
        p.waiting -= 1;
        if p.waiting > 0 {
            return;
        }
        let shards = self.params.shards;
        let starts: Option<Vec<u64>> = p.starts.iter().copied().collect();
        let origin = p.caller.origin;
        let go = starts.is_some();
        match starts {
            Some(seqs) if p.from_log.is_some() => {
                // Read the event log first; the second round follows.
                let (after, _) = p.from_log.clone().expect("checked");
                let upto = Cursor { generation: self.params.generation, seqs };
                p.upto = Some(upto.clone());
                let token = self.new_token();
                self.reporter.log_reads.insert(token, op);
                out.push(Output::ReadLog { token, after, upto });
                return;
            }
            Some(seqs) => {
                p.going = true;
                p.waiting = shards;
                let cursor = Cursor { generation: self.params.generation, seqs };
                // The state as of the cursor, then the cursor, before any
                // event of the second round reaches the connection.
                if let Some(state) = p.state.take() {
                    for frame in self.state_frames(&state, &cursor) {
                        out.push(Output::Event { origin, frame });
                    }
                }
                out.push(Output::Cursor { origin, sub: op, cursor });
            }
            None => {
                let p = self.reporter.pending_subs.remove(&op).expect("present");
                self.reporter.subscribed_here.remove(&origin);
                let e = ProtoError::new(
                    ErrorCode::CursorExpired,
                    "the server no longer keeps every event after this cursor (reporting-replay-events); subscribe \
                     without one and read the state again",
                );
                out.push(Output::Reply { origin, frame: event_error(p.caller.ref_id, &e) });
            }
        }
        for to in 0..shards {
            out.push(Output::Peer { to, msg: PeerMsg::SubscribeGo { op, go } });
        }
    }

    pub(crate) fn unsubscribe(&mut self, origin: Origin, out: &mut Vec<Output>) -> bool {
        if !self.reporter.subscribed_here.remove(&origin) {
            return false;
        }
        for to in 0..self.params.shards {
            out.push(Output::Peer { to, msg: PeerMsg::Unsubscribe { origin } });
        }
        // Before its answer: nothing of the ended subscription follows it.
        out.push(Output::Unsubscribed { origin, below: self.next_op });
        true
    }
}
