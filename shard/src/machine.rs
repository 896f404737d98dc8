//! The shard state machine: pure and deterministic.
//!
//! Inputs (requests about interactions this shard owns, storage completions)
//! go in with the current time; outputs (replies, storage writes) come out.
//! No I/O, no clock reads, no randomness. The server's executor feeds it;
//! tests drive it directly.
//!
//! Durability rule (brief, invariant 1): a change is applied in memory at
//! once, sent to storage as a full-row write, and acknowledged only when the
//! storage completion for that write comes back successful. If storage
//! fails, the request is answered with StorageFailure and the change is
//! undone where it can be (a failed submit is forgotten, a failed stop is
//! restored); a failed property change stays in memory and is written again
//! with the next change, which is allowed because it was never acknowledged.

use std::sync::Arc;

use ahash::AHashMap;

use crate::catalog::Catalog;
use crate::id::{self, IdGen};
use crate::interaction::{Interaction, InteractionRecord, Millis};
use crate::proto::frame::Frame;
use crate::proto::msg::{attr, ClientType, ErrorCode};
use crate::proto::request::{event_ack, event_error, ProtoError, Request, Submit};
use crate::value::KvList;

/// Where a request came from: the shard that holds the connection and the
/// connection's number on that shard. Replies go back there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub shard: u16,
    pub conn: u64,
}

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub origin: Origin,
    pub ref_id: u32,
    pub client_type: ClientType,
    pub client_name: Arc<str>,
}

#[derive(Clone, Debug)]
pub enum Input {
    /// A request routed to this shard (it owns the interaction, or it is a
    /// submit with a server-generated id).
    Request { caller: Caller, request: Request },
    /// Storage finished the write with this token.
    StorageDone { token: u64, ok: bool },
}

/// A change for the database, keyed by interaction id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// First row of a new interaction.
    Insert(Box<InteractionRecord>),
    /// Replace the row (delete, then insert): every later change.
    Upsert(Box<InteractionRecord>),
    /// The interaction left the cache.
    Delete(String),
}

impl StoreOp {
    pub fn id(&self) -> &str {
        match self {
            StoreOp::Insert(r) | StoreOp::Upsert(r) => &r.id,
            StoreOp::Delete(id) => id,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send `frame` to the connection at `origin`.
    Reply { origin: Origin, frame: Frame },
    /// Write `op`; answer with `Input::StorageDone { token, .. }`.
    Store { token: u64, op: StoreOp },
}

/// What to do if a write fails.
#[derive(Clone, Debug)]
enum Undo {
    Nothing,
    /// A submit that was never acknowledged: drop it again.
    ForgetSubmitted(Box<str>),
    /// A stop that was never acknowledged: the interaction is live again.
    Restore(Box<Interaction>),
}

/// A write waiting for its storage completion.
#[derive(Debug)]
struct Pending {
    reply_to: Option<Origin>,
    reply: Frame,
    undo: Undo,
}

/// Identity of a shard within its node.
#[derive(Clone, Copy, Debug)]
pub struct ShardParams {
    pub node: u8,
    pub shard: u16,
    pub shards: u16,
    /// Largest encoded size of one interaction's properties: keeps every
    /// answer describing an interaction well inside a frame.
    pub max_properties_bytes: usize,
}

pub struct Shard {
    params: ShardParams,
    catalog: Arc<Catalog>,
    interactions: AHashMap<Box<str>, Interaction>,
    ids: IdGen,
    next_token: u64,
    pending: AHashMap<u64, Pending>,
}

/// A request's immediate answer (`Some`), or `None` when storage answers later.
type Reply = Result<Option<Frame>, ProtoError>;

impl Shard {
    pub fn new(params: ShardParams, catalog: Arc<Catalog>) -> Self {
        assert!(params.shard < params.shards);
        Shard {
            params,
            catalog,
            interactions: AHashMap::new(),
            ids: IdGen::new(params.node, params.shard, params.shards),
            next_token: 1,
            pending: AHashMap::new(),
        }
    }

    pub fn params(&self) -> ShardParams {
        self.params
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Number of live interactions held.
    pub fn len(&self) -> usize {
        self.interactions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.interactions.is_empty()
    }

    /// Writes sent to storage and not yet completed.
    pub fn pending_writes(&self) -> usize {
        self.pending.len()
    }

    pub fn get(&self, id: &str) -> Option<&Interaction> {
        self.interactions.get(id)
    }

    pub fn interactions(&self) -> impl Iterator<Item = &Interaction> {
        self.interactions.values()
    }

    /// Whether this shard owns `id`.
    pub fn owns(&self, id: &str) -> bool {
        id::owner_of(id, self.params.shards) == self.params.shard
    }

    /// Puts back an interaction read from storage at start.
    pub fn load(&mut self, record: InteractionRecord) -> Result<(), String> {
        let id = record.id.clone();
        if !self.owns(&id) {
            return Err(format!("interaction {id} does not belong to shard {}", self.params.shard));
        }
        let ix = Interaction::from_record(record, &self.catalog).map_err(|e| format!("interaction {id}: {e}"))?;
        if self.interactions.insert(ix.id.clone(), ix).is_some() {
            return Err(format!("interaction {id} is stored twice"));
        }
        Ok(())
    }

    /// Feeds one input; appends what must happen to `out`.
    pub fn handle(&mut self, now_ms: Millis, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::Request { caller, request } => self.handle_request(now_ms, caller, request, out),
            Input::StorageDone { token, ok } => self.storage_done(token, ok, out),
        }
    }

    fn handle_request(&mut self, now_ms: Millis, caller: Caller, request: Request, out: &mut Vec<Output>) {
        let origin = caller.origin;
        let ref_id = caller.ref_id;
        if let Some(id) = request.interaction_id() {
            if !self.owns(id) {
                // The router sends requests to the owner; anything else is a bug.
                let err = ProtoError::new(ErrorCode::Internal, format!("request for {id} routed to the wrong shard"));
                out.push(Output::Reply { origin, frame: event_error(ref_id, &err) });
                return;
            }
        }
        let result = match request {
            Request::Submit(s) => self.submit(now_ms, &caller, *s, out),
            Request::GetInteractionProperties { id } => self.get_properties(&id, ref_id),
            Request::ChangeProperties { id, changed, deleted } => {
                self.change_properties(&caller, &id, changed, deleted, out)
            }
            Request::PlaceInQueue { id, queue } => self.place_in_queue(now_ms, &caller, &id, &queue, out),
            Request::StopProcessing { id, reason: _ } => self.stop_processing(&caller, &id, out),
            Request::RegisterClient { .. } | Request::Ping => Err(ProtoError::new(
                ErrorCode::Internal,
                format!("{} is handled by the connection, not a shard", request.name()),
            )),
        };
        match result {
            Ok(Some(frame)) => out.push(Output::Reply { origin, frame }),
            Ok(None) => {} // answered when storage completes
            Err(e) => out.push(Output::Reply { origin, frame: event_error(ref_id, &e) }),
        }
    }

    fn new_token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    /// Sends the current state of `id` to storage; the reply waits for it.
    fn write(&mut self, id: &str, reply_to: Option<Origin>, reply: Frame, undo: Undo, out: &mut Vec<Output>) {
        let ix = self.interactions.get_mut(id).expect("write of a live interaction");
        let record = Box::new(ix.to_record(&self.catalog));
        let op = if ix.stored { StoreOp::Upsert(record) } else { StoreOp::Insert(record) };
        ix.stored = true;
        let token = self.new_token();
        self.pending.insert(token, Pending { reply_to, reply, undo });
        out.push(Output::Store { token, op });
    }

    fn submit(&mut self, now_ms: Millis, caller: &Caller, s: Submit, out: &mut Vec<Output>) -> Reply {
        if !caller.client_type.may_submit() {
            return Err(ProtoError::new(
                ErrorCode::NotPermitted,
                format!("a {} client may not submit interactions", caller.client_type.name()),
            ));
        }
        if !self.catalog.enable_submit {
            return Err(ProtoError::new(ErrorCode::SubmitDisabled, "this node does not accept submissions"));
        }
        let tenant = self
            .catalog
            .tenant(&s.tenant)
            .ok_or_else(|| ProtoError::new(ErrorCode::UnknownTenant, format!("unknown tenant '{}'", s.tenant)))?;
        let t = self.catalog.tenant_at(tenant);
        let media = t.media_type(&s.media_type).ok_or_else(|| {
            ProtoError::new(
                ErrorCode::UnknownMediaType,
                format!("unknown media type '{}' in tenant '{}'", s.media_type, t.name),
            )
        })?;
        if !t.media[media as usize].enabled {
            return Err(ProtoError::new(
                ErrorCode::MediaTypeDisabled,
                format!("media type '{}' is disabled in tenant '{}'", s.media_type, t.name),
            ));
        }
        let queue = t.queue(&s.queue).ok_or_else(|| {
            ProtoError::new(ErrorCode::UnknownQueue, format!("unknown queue '{}' in tenant '{}'", s.queue, t.name))
        })?;
        check_properties(&s.properties)?;
        self.check_size(&s.properties)?;
        for (what, v) in [("InteractionType", &s.interaction_type), ("InteractionSubtype", &s.interaction_subtype)] {
            if v.is_empty() || v.len() > MAX_NAME_LEN {
                return Err(ProtoError::new(
                    ErrorCode::InvalidValue,
                    format!("{what} must be 1 to {MAX_NAME_LEN} bytes"),
                ));
            }
        }
        let id: Box<str> = match s.id {
            Some(id) => {
                if id::decode(&id).is_some() {
                    // Ids of the generated form are the server's to make: a
                    // client taking one could collide with a later one.
                    return Err(ProtoError::new(
                        ErrorCode::InvalidInteractionId,
                        format!("interaction id '{id}' has the form of a server-generated id; choose another form"),
                    ));
                }
                if !id::is_valid_client_id(&id) {
                    return Err(ProtoError::new(
                        ErrorCode::InvalidInteractionId,
                        format!(
                            "interaction id '{id}' must be 1 to {} letters, digits, '-', '_', '.' or ':'",
                            id::MAX_CLIENT_ID_LEN
                        ),
                    ));
                }
                if self.interactions.contains_key(id.as_str()) {
                    return Err(ProtoError::new(
                        ErrorCode::DuplicateInteractionId,
                        format!("interaction {id} already exists"),
                    ));
                }
                id.into()
            }
            None => {
                // A loaded interaction may hold an id this generator makes
                // again (the clock went back across a restart): skip it.
                let mut id = self.ids.next(now_ms);
                while self.interactions.contains_key(id.as_str()) {
                    id = self.ids.next(now_ms);
                }
                id.into()
            }
        };
        let ix = Interaction {
            id: id.clone(),
            tenant,
            media,
            queue,
            interaction_type: s.interaction_type.into(),
            interaction_subtype: s.interaction_subtype.into(),
            priority: s.priority,
            submitted_by: (*caller.client_name).into(),
            received_at: s.received_at_ms.unwrap_or(now_ms),
            submitted_at: now_ms,
            placed_in_queue_at: now_ms,
            moved_to_queue_at: 0,
            delivered_at: 0,
            assigned_at: 0,
            held_at: 0,
            completed_at: 0,
            properties: s.properties,
            version: 0,
            stored: false,
        };
        self.interactions.insert(id.clone(), ix);
        let reply = event_ack(caller.ref_id).with(attr::INTERACTION_ID, &*id);
        self.write(&id.clone(), Some(caller.origin), reply, Undo::ForgetSubmitted(id), out);
        Ok(None)
    }

    fn live(&self, id: &str) -> Result<&Interaction, ProtoError> {
        self.interactions
            .get(id)
            .ok_or_else(|| ProtoError::new(ErrorCode::UnknownInteraction, format!("no interaction {id}")))
    }

    fn get_properties(&self, id: &str, ref_id: u32) -> Reply {
        Ok(Some(self.live(id)?.to_frame(&self.catalog, ref_id)))
    }

    fn change_properties(
        &mut self,
        caller: &Caller,
        id: &str,
        changed: KvList,
        deleted: Vec<String>,
        out: &mut Vec<Output>,
    ) -> Reply {
        self.live(id)?;
        check_properties(&changed)?;
        if let Some(k) = deleted.iter().find(|k| changed.get(k).is_some()) {
            return Err(ProtoError::new(
                ErrorCode::InvalidValue,
                format!("property '{k}' is both changed and deleted"),
            ));
        }
        if changed.is_empty() && deleted.is_empty() {
            return Err(ProtoError::new(
                ErrorCode::MissingAttribute,
                "nothing to change: give Properties or DeletedKeys",
            ));
        }
        let mut properties = self.interactions[id].properties.clone();
        for (k, v) in changed.into_entries() {
            properties.set(k, v);
        }
        for k in &deleted {
            // Deleting a key that is not there is not an error: the result is
            // the same, and clients retrying a change must not fail.
            properties.remove(k);
        }
        self.check_size(&properties)?;
        let ix = self.interactions.get_mut(id).expect("checked live");
        ix.properties = properties;
        ix.version += 1;
        self.write(id, Some(caller.origin), event_ack(caller.ref_id), Undo::Nothing, out);
        Ok(None)
    }

    fn place_in_queue(
        &mut self,
        now_ms: Millis,
        caller: &Caller,
        id: &str,
        queue: &str,
        out: &mut Vec<Output>,
    ) -> Reply {
        let ix = self.live(id)?;
        let t = self.catalog.tenant_at(ix.tenant);
        let q = t.queue(queue).ok_or_else(|| {
            ProtoError::new(ErrorCode::UnknownQueue, format!("unknown queue '{queue}' in tenant '{}'", t.name))
        })?;
        let ix = self.interactions.get_mut(id).expect("checked live");
        ix.queue = q;
        ix.placed_in_queue_at = now_ms;
        ix.moved_to_queue_at = now_ms;
        ix.version += 1;
        self.write(id, Some(caller.origin), event_ack(caller.ref_id), Undo::Nothing, out);
        Ok(None)
    }

    fn stop_processing(&mut self, caller: &Caller, id: &str, out: &mut Vec<Output>) -> Reply {
        let ix = self
            .interactions
            .remove(id)
            .ok_or_else(|| ProtoError::new(ErrorCode::UnknownInteraction, format!("no interaction {id}")))?;
        let token = self.new_token();
        self.pending.insert(
            token,
            Pending {
                reply_to: Some(caller.origin),
                reply: event_ack(caller.ref_id),
                undo: Undo::Restore(Box::new(ix)),
            },
        );
        out.push(Output::Store { token, op: StoreOp::Delete(id.to_string()) });
        Ok(None)
    }

    fn storage_done(&mut self, token: u64, ok: bool, out: &mut Vec<Output>) {
        let Some(p) = self.pending.remove(&token) else {
            // A completion for a write this shard never made: a bug in the
            // server's plumbing. Refuse loudly in tests, ignore in release.
            debug_assert!(false, "storage completion for unknown token {token}");
            return;
        };
        let Some(origin) = p.reply_to else { return };
        if ok {
            out.push(Output::Reply { origin, frame: p.reply });
            return;
        }
        match p.undo {
            Undo::Nothing => {}
            Undo::ForgetSubmitted(id) => {
                self.interactions.remove(&id);
                // Remove whatever a later write of this id may have stored.
                let token = self.new_token();
                self.pending.insert(token, Pending { reply_to: None, reply: Frame::new(0, 0), undo: Undo::Nothing });
                out.push(Output::Store { token, op: StoreOp::Delete(id.to_string()) });
            }
            Undo::Restore(ix) => {
                let mut ix = *ix;
                ix.stored = true;
                self.interactions.entry(ix.id.clone()).or_insert(ix);
            }
        }
        let err = ProtoError::new(
            ErrorCode::StorageFailure,
            "the change could not be committed to the database; it is not applied",
        );
        out.push(Output::Reply { origin, frame: event_error(p.reply.ref_id, &err) });
    }
}

impl Shard {
    fn check_size(&self, properties: &KvList) -> Result<(), ProtoError> {
        let size = crate::proto::frame::encoded_list_len(properties);
        if size > self.params.max_properties_bytes {
            return Err(ProtoError::new(
                ErrorCode::InvalidValue,
                format!(
                    "properties would take {size} bytes; the limit is {} (max-frame-size / 2)",
                    self.params.max_properties_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// Longest interaction type, subtype or client name stored (the database
/// columns are 255 characters wide).
pub const MAX_NAME_LEN: usize = 255;

/// Property lists in requests must not name a key twice or use an empty key.
fn check_properties(l: &KvList) -> Result<(), ProtoError> {
    if l.has_duplicate_keys() {
        return Err(ProtoError::new(ErrorCode::InvalidValue, "a property key appears twice"));
    }
    if l.iter().any(|(k, _)| k.is_empty()) {
        return Err(ProtoError::new(ErrorCode::InvalidValue, "a property key is empty"));
    }
    Ok(())
}
