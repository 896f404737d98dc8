//! The reporting stream: every state change of an interaction or an agent
//! as a typed event (event.rs), sent to the subscribed reporting clients.
//!
//! Every shard knows every subscriber (a subscription is broadcast), so
//! each shard sends its own events straight to the subscriber's
//! connection. An interaction's events all come from its owner and an
//! agent's from its home, and channels between two shards are FIFO, so a
//! subscriber sees each interaction's and each agent's events in order.
//! The subscriber's connection numbers the events it is sent
//! (EventSequence 1, 2, 3...), so a client can tell nothing was skipped.
//! Interaction changes that are written to the database are reported when
//! the write commits, with the acknowledgement, never before.
//!
//! A slow subscriber is handled like any slow client (invariant 6): its
//! connection's output buffer is bounded and it is disconnected past it.

use std::sync::Arc;

use crate::agent::AgentRef;
use crate::catalog::TenantIdx;
use crate::event::{text, Event, Location, Subject, What};
use crate::interaction::{Millis, Place};
use crate::machine::{Caller, Origin, Output, Shard};
use crate::peer::PeerMsg;
use crate::proto::frame::Frame;
use crate::proto::msg::{ClientType, ErrorCode};
use crate::proto::request::{event_ack, ProtoError};
use crate::store::Slot;

/// A subscription waiting for every shard to register it.
#[derive(Clone, Debug)]
pub(crate) struct PendingSubscribe {
    pub caller: Caller,
    pub waiting: u16,
}

impl Shard {
    /// Whether anyone subscribes to `tenant`'s events: events are built
    /// only then.
    pub(crate) fn reporting(&self, tenant: TenantIdx) -> bool {
        self.subs.iter().any(|(_, t)| t.is_none_or(|t| t == tenant))
    }

    /// Sends `event` to every subscriber of its tenant: one event, shared,
    /// which each subscriber's connection turns into its frame.
    pub(crate) fn emit(&self, event: Event, out: &mut Vec<Output>) {
        let tenant = event.tenant;
        let event = Arc::new(event);
        for (origin, t) in &self.subs {
            if t.is_none_or(|t| t == tenant) {
                out.push(Output::Report { origin: *origin, event: event.clone() });
            }
        }
    }

    /// Reports an agent event; `what` is made only if someone subscribes.
    pub(crate) fn report_agent(&self, now_ms: Millis, a: AgentRef, what: impl FnOnce() -> What, out: &mut Vec<Output>) {
        if !self.reporting(a.tenant) {
            return;
        }
        self.emit(Event { time: now_ms, tenant: a.tenant, subject: Subject::Agent(a.agent), what: what() }, out);
    }

    /// An interaction event, made only if someone subscribes.
    pub(crate) fn ix_event(&self, now_ms: Millis, slot: Slot, what: impl FnOnce() -> What) -> Option<Event> {
        self.event_of(now_ms, self.store.get(slot), what)
    }

    /// [`Shard::ix_event`] for an interaction given as it is (one out of
    /// the store: a stop's copy, kept to restore it).
    pub(crate) fn event_of(
        &self,
        now_ms: Millis,
        ix: &crate::interaction::Interaction,
        what: impl FnOnce() -> What,
    ) -> Option<Event> {
        if !self.reporting(ix.tenant) {
            return None;
        }
        let at = match ix.place {
            Place::Queue(q) => Location::Queue(q),
            Place::Workbin { workbin, owner } => Location::Workbin { workbin, owner: text(self.syms.name(owner)) },
        };
        Some(Event {
            time: now_ms,
            tenant: ix.tenant,
            subject: Subject::Interaction { id: ix.id.clone(), media: ix.media, at },
            what: what(),
        })
    }

    /// Reports an interaction event now, or, if a write of that
    /// interaction is still in flight, right after that write's answer and
    /// events (committed or not), so each interaction's events keep their
    /// order.
    pub(crate) fn report_ix(&mut self, now_ms: Millis, slot: Slot, what: impl FnOnce() -> What, out: &mut Vec<Output>) {
        let Some(e) = self.ix_event(now_ms, slot, what) else { return };
        let mut events = Vec::new();
        self.emit(e, &mut events);
        for e in events {
            self.send_ordered(slot, e, out);
        }
    }

    /// Sends `o`, an event about the interaction at `slot`, after the
    /// answer and events of that interaction's write in flight, if any.
    pub(crate) fn send_ordered(&mut self, slot: Slot, o: Output, out: &mut Vec<Output>) {
        let id = &self.store.get(slot).id;
        match self.last_write.get(id).and_then(|t| self.pending.get_mut(t)) {
            Some(p) => p.after.push(o),
            None => out.push(o),
        }
    }

    /// Sends events that waited for a commit.
    pub(crate) fn emit_reports(&self, reports: Vec<Event>, out: &mut Vec<Output>) {
        for e in reports {
            self.emit(e, out);
        }
    }

    /// RequestSubscribe, on the subscriber's shard: every shard registers
    /// it, then it is acknowledged, so every event after the EventAck
    /// reaches it.
    pub(crate) fn subscribe(
        &mut self,
        caller: &Caller,
        tenant: Option<&str>,
        out: &mut Vec<Output>,
    ) -> Result<Option<Frame>, ProtoError> {
        if !matches!(caller.client_type, ClientType::ReportingEngine | ClientType::Operator | ClientType::Proxy) {
            return Err(ProtoError::new(
                ErrorCode::NotPermitted,
                format!("a {} client may not subscribe to reporting events", caller.client_type.name()),
            ));
        }
        let tenant = tenant.map(|t| self.tenant_idx(t)).transpose()?;
        if self.subscribed_here.contains(&caller.origin) {
            return Err(ProtoError::new(ErrorCode::InvalidState, "this connection is already subscribed"));
        }
        self.subscribed_here.insert(caller.origin);
        let op = self.next_op;
        self.next_op += 1;
        self.pending_subs.insert(op, PendingSubscribe { caller: caller.clone(), waiting: self.params.shards });
        for to in 0..self.params.shards {
            out.push(Output::Peer { to, msg: PeerMsg::Subscribe { op, origin: caller.origin, tenant } });
        }
        Ok(None)
    }

    pub(crate) fn subscribed(&mut self, op: u64, out: &mut Vec<Output>) {
        let Some(p) = self.pending_subs.get_mut(&op) else { return };
        p.waiting -= 1;
        if p.waiting == 0 {
            let p = self.pending_subs.remove(&op).expect("present");
            out.push(Output::Reply { origin: p.caller.origin, frame: event_ack(p.caller.ref_id) });
        }
    }

    pub(crate) fn unsubscribe(&mut self, origin: Origin, out: &mut Vec<Output>) -> bool {
        if !self.subscribed_here.remove(&origin) {
            return false;
        }
        for to in 0..self.params.shards {
            out.push(Output::Peer { to, msg: PeerMsg::Unsubscribe { origin } });
        }
        true
    }
}
