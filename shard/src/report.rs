//! The reporting stream: every state change of an interaction or an agent
//! as an event, sent to the subscribed reporting clients.
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

use crate::agent::AgentRef;
use crate::catalog::TenantIdx;
use crate::interaction::{Millis, Place};
use crate::machine::{Caller, Origin, Output, Shard};
use crate::peer::PeerMsg;
use crate::proto::frame::Frame;
use crate::proto::msg::{attr, ClientType, ErrorCode};
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

    pub(crate) fn emit(&self, tenant: TenantIdx, frame: Frame, out: &mut Vec<Output>) {
        for (origin, t) in &self.subs {
            if t.is_none_or(|t| t == tenant) {
                out.push(Output::Event { origin: *origin, frame: frame.clone() });
            }
        }
    }

    /// Reports an agent event: time, tenant, agent, and what `extra` adds.
    pub(crate) fn report_agent(
        &self,
        now_ms: Millis,
        msg_type: u16,
        a: AgentRef,
        extra: impl FnOnce(&mut Frame),
        out: &mut Vec<Output>,
    ) {
        if !self.reporting(a.tenant) {
            return;
        }
        let mut f = Frame::new(msg_type, 0)
            .with(attr::EVENT_TIME, now_ms)
            .with(attr::TENANT, self.catalog.tenant_at(a.tenant).name.as_str())
            .with(attr::AGENT_ID, self.agent_login_id(a));
        extra(&mut f);
        self.emit(a.tenant, f, out);
    }

    /// An interaction event, built only if someone subscribes: time,
    /// tenant, id, media type, where it is, and what `extra` adds.
    pub(crate) fn ix_event(
        &self,
        now_ms: Millis,
        msg_type: u16,
        slot: Slot,
        extra: impl FnOnce(&mut Frame),
    ) -> Option<Frame> {
        self.event_of(now_ms, msg_type, self.store.get(slot), extra)
    }

    /// [`Shard::ix_event`] for an interaction given as it is (one out of
    /// the store: a stop's copy, kept to restore it).
    pub(crate) fn event_of(
        &self,
        now_ms: Millis,
        msg_type: u16,
        ix: &crate::interaction::Interaction,
        extra: impl FnOnce(&mut Frame),
    ) -> Option<Frame> {
        if !self.reporting(ix.tenant) {
            return None;
        }
        let t = self.catalog.tenant_at(ix.tenant);
        let mut f = Frame::new(msg_type, 0)
            .with(attr::EVENT_TIME, now_ms)
            .with(attr::TENANT, t.name.as_str())
            .with(attr::INTERACTION_ID, &*ix.id)
            .with(attr::MEDIA_TYPE, t.media[ix.media as usize].name.as_str());
        match ix.place {
            Place::Queue(q) => f.push(attr::QUEUE, t.queues[q as usize].name.as_str()),
            Place::Workbin { workbin, owner } => {
                f.push(attr::WORKBIN, t.workbins[workbin as usize].name.as_str());
                f.push(attr::WORKBIN_OWNER, self.syms.name(owner));
            }
        }
        extra(&mut f);
        Some(f)
    }

    /// Reports an interaction event now, or, if a write of that
    /// interaction is still in flight, right after that write's answer and
    /// events (committed or not), so each interaction's events keep their
    /// order.
    pub(crate) fn report_ix(
        &mut self,
        now_ms: Millis,
        msg_type: u16,
        slot: Slot,
        extra: impl FnOnce(&mut Frame),
        out: &mut Vec<Output>,
    ) {
        let tenant = self.store.get(slot).tenant;
        let Some(f) = self.ix_event(now_ms, msg_type, slot, extra) else { return };
        let mut events = Vec::new();
        self.emit(tenant, f, &mut events);
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
    pub(crate) fn emit_reports(&self, reports: Vec<(TenantIdx, Frame)>, out: &mut Vec<Output>) {
        for (tenant, f) in reports {
            self.emit(tenant, f, out);
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
