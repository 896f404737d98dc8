//! Typed requests decoded from frames, and builders for the events the
//! server sends. Validation of attribute presence and types happens here, so
//! the state machine only ever sees well-typed requests.

use super::frame::Frame;
use super::msg::{attr, msg_type, ClientType, ErrorCode};
use crate::value::{type_name, KvList, Value, TAG_INT, TAG_LIST, TAG_STR};

/// A request error: the code and the text sent back in EventError.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtoError {
    pub code: ErrorCode,
    pub text: String,
}

impl ProtoError {
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        ProtoError { code, text: text.into() }
    }
}

impl std::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "error {} ({:?}): {}", self.code.code(), self.code, self.text)
    }
}

/// RequestSubmit, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submit {
    pub tenant: String,
    pub media_type: String,
    pub interaction_type: String,
    pub interaction_subtype: String,
    pub queue: String,
    pub priority: i64,
    pub properties: KvList,
    /// Client-given id; `None` lets the server generate one.
    pub id: Option<String>,
    /// When the media server received the contact, if it says so.
    pub received_at_ms: Option<i64>,
}

/// Every request of protocol v1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    RegisterClient {
        client_type: ClientType,
        name: String,
        credential: Option<String>,
    },
    Ping,
    /// Ends the session named by the frame's SessionId (the connection
    /// handles it, as it does registration).
    CloseSession,
    Submit(Box<Submit>),
    GetInteractionProperties {
        id: String,
    },
    ChangeProperties {
        id: String,
        changed: KvList,
        deleted: Vec<String>,
    },
    /// `queue: None` moves the interaction to the `next` queue of the one
    /// it is in (the workflow).
    PlaceInQueue {
        id: String,
        queue: Option<String>,
    },
    StopProcessing {
        id: String,
        reason: Option<String>,
    },
    /// A routing engine takes up to `count` interactions from a view.
    Pull {
        tenant: String,
        view: String,
        count: u32,
    },
    FindInteractions {
        tenant: Option<String>,
        condition: String,
        limit: u32,
    },
    PlaceInWorkbin {
        id: String,
        workbin: String,
        owner: String,
    },
    GetWorkbinContent {
        tenant: String,
        workbin: String,
        owner: String,
    },
    TakeSnapshot {
        tenant: Option<String>,
        condition: String,
        lock: bool,
        limit: Option<u32>,
    },
    GetSnapshotInteractions {
        snapshot: u64,
        start: u32,
        count: u32,
    },
    ReleaseSnapshot {
        snapshot: u64,
    },
    GetQueueDepth {
        tenant: String,
    },

    /// An agent desktop logs an agent in on a place with a media list
    /// (media type, capacity; 0 means the configured capacity).
    AgentLogin {
        tenant: String,
        agent: String,
        place: String,
        media: Vec<(String, u16)>,
        reason: Option<String>,
    },
    /// `agent: None` means the agent logged in on this connection (for
    /// every agent request below).
    AgentLogout {
        tenant: String,
        agent: Option<String>,
        reason: Option<String>,
    },
    /// Ready (RequestCancelNotReadyForMedia) or not ready
    /// (RequestNotReadyForMedia) for one media type, or all (`media: None`).
    SetReady {
        tenant: String,
        agent: Option<String>,
        media: Option<String>,
        ready: bool,
        reason: Option<String>,
    },
    AddMedia {
        tenant: String,
        agent: Option<String>,
        media: String,
        capacity: u16,
    },
    RemoveMedia {
        tenant: String,
        agent: Option<String>,
        media: String,
    },
    SetDoNotDisturb {
        tenant: String,
        agent: Option<String>,
        on: bool,
    },
    /// One agent's state, or every configured agent's of the tenant
    /// (`agent: None`, whatever agent the connection carries).
    GetAgentState {
        tenant: String,
        agent: Option<String>,
    },
    Accept {
        id: String,
        ticket: Option<u64>,
    },
    Reject {
        id: String,
        ticket: Option<u64>,
        reason: Option<String>,
    },
    /// A routing engine (holding the interaction's routing lock) or an
    /// operator offers an interaction to a chosen agent.
    Deliver {
        id: String,
        agent: String,
    },
    Hold {
        id: String,
    },
    Resume {
        id: String,
    },
    /// The handling agent passes the interaction to another agent: it is
    /// offered to `agent`, and the first agent leaves it.
    TransferToAgent {
        id: String,
        agent: String,
    },
    /// The handling agent leaves the interaction: it goes back to its queue
    /// (or `queue`), at its original place.
    LeaveInteraction {
        id: String,
        queue: Option<String>,
    },
    /// A reporting client asks for every reporting event (of one tenant,
    /// or all with `tenant: None`); with `cursor`, every event after the
    /// one that carried it first; with `with_state` (a new subscription
    /// only), the state of agents and queues first.
    Subscribe {
        tenant: Option<String>,
        cursor: Option<String>,
        with_state: bool,
    },
    Unsubscribe,
}

/// Largest RequestPull count.
pub const MAX_PULL_COUNT: u32 = 1000;
/// Largest RequestFindInteractions limit, and the default.
pub const MAX_FIND_LIMIT: u32 = 10_000;
pub const DEFAULT_FIND_LIMIT: u32 = 100;
/// Largest page of RequestGetSnapshotInteractions, and the default.
pub const MAX_SNAPSHOT_PAGE: u32 = 1000;
pub const DEFAULT_SNAPSHOT_PAGE: u32 = 100;

impl Request {
    /// The interaction this request is about, if any: decides which shard
    /// owns the request.
    pub fn interaction_id(&self) -> Option<&str> {
        match self {
            Request::GetInteractionProperties { id }
            | Request::ChangeProperties { id, .. }
            | Request::PlaceInQueue { id, .. }
            | Request::StopProcessing { id, .. }
            | Request::PlaceInWorkbin { id, .. }
            | Request::Accept { id, .. }
            | Request::Reject { id, .. }
            | Request::Deliver { id, .. }
            | Request::Hold { id }
            | Request::Resume { id }
            | Request::TransferToAgent { id, .. }
            | Request::LeaveInteraction { id, .. } => Some(id),
            Request::Submit(s) => s.id.as_deref(),
            Request::RegisterClient { .. }
            | Request::Ping
            | Request::CloseSession
            | Request::Pull { .. }
            | Request::FindInteractions { .. }
            | Request::GetWorkbinContent { .. }
            | Request::TakeSnapshot { .. }
            | Request::GetSnapshotInteractions { .. }
            | Request::ReleaseSnapshot { .. }
            | Request::GetQueueDepth { .. }
            | Request::AgentLogin { .. }
            | Request::AgentLogout { .. }
            | Request::SetReady { .. }
            | Request::AddMedia { .. }
            | Request::RemoveMedia { .. }
            | Request::SetDoNotDisturb { .. }
            | Request::GetAgentState { .. }
            | Request::Subscribe { .. }
            | Request::Unsubscribe => None,
        }
    }

    /// The tenant a request names: `Some(Some(t))`; `Some(None)` for a
    /// request over every tenant (a find, snapshot or subscription without
    /// one); `None` for a request that names none (it is about an
    /// interaction, a snapshot, or the connection).
    pub fn tenant_named(&self) -> Option<Option<&str>> {
        match self {
            Request::Submit(s) => Some(Some(&s.tenant)),
            Request::Pull { tenant, .. }
            | Request::GetWorkbinContent { tenant, .. }
            | Request::GetQueueDepth { tenant }
            | Request::AgentLogin { tenant, .. }
            | Request::AgentLogout { tenant, .. }
            | Request::SetReady { tenant, .. }
            | Request::AddMedia { tenant, .. }
            | Request::RemoveMedia { tenant, .. }
            | Request::SetDoNotDisturb { tenant, .. }
            | Request::GetAgentState { tenant, .. } => Some(Some(tenant)),
            Request::FindInteractions { tenant, .. }
            | Request::TakeSnapshot { tenant, .. }
            | Request::Subscribe { tenant, .. } => Some(tenant.as_deref()),
            Request::RegisterClient { .. }
            | Request::Ping
            | Request::CloseSession
            | Request::GetInteractionProperties { .. }
            | Request::ChangeProperties { .. }
            | Request::PlaceInQueue { .. }
            | Request::StopProcessing { .. }
            | Request::PlaceInWorkbin { .. }
            | Request::GetSnapshotInteractions { .. }
            | Request::ReleaseSnapshot { .. }
            | Request::Accept { .. }
            | Request::Reject { .. }
            | Request::Deliver { .. }
            | Request::Hold { .. }
            | Request::Resume { .. }
            | Request::TransferToAgent { .. }
            | Request::LeaveInteraction { .. }
            | Request::Unsubscribe => None,
        }
    }

    /// The agent a request about an agent names: (tenant, login id; `None`
    /// for the agent of the caller's connection). Decides the home shard.
    pub fn agent(&self) -> Option<(&str, Option<&str>)> {
        match self {
            Request::AgentLogin { tenant, agent, .. } => Some((tenant, Some(agent))),
            Request::AgentLogout { tenant, agent, .. }
            | Request::SetReady { tenant, agent, .. }
            | Request::AddMedia { tenant, agent, .. }
            | Request::RemoveMedia { tenant, agent, .. }
            | Request::SetDoNotDisturb { tenant, agent, .. } => Some((tenant, agent.as_deref())),
            Request::GetAgentState { tenant, agent: Some(a) } => Some((tenant, Some(a))),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Request::RegisterClient { .. } => "RequestRegisterClient",
            Request::Ping => "RequestPing",
            Request::CloseSession => "RequestCloseSession",
            Request::Submit(_) => "RequestSubmit",
            Request::GetInteractionProperties { .. } => "RequestGetInteractionProperties",
            Request::ChangeProperties { .. } => "RequestChangeProperties",
            Request::PlaceInQueue { .. } => "RequestPlaceInQueue",
            Request::StopProcessing { .. } => "RequestStopProcessing",
            Request::Pull { .. } => "RequestPull",
            Request::FindInteractions { .. } => "RequestFindInteractions",
            Request::PlaceInWorkbin { .. } => "RequestPlaceInWorkbin",
            Request::GetWorkbinContent { .. } => "RequestGetWorkbinContent",
            Request::TakeSnapshot { .. } => "RequestTakeSnapshot",
            Request::GetSnapshotInteractions { .. } => "RequestGetSnapshotInteractions",
            Request::ReleaseSnapshot { .. } => "RequestReleaseSnapshot",
            Request::GetQueueDepth { .. } => "RequestGetQueueDepth",
            Request::AgentLogin { .. } => "RequestAgentLogin",
            Request::AgentLogout { .. } => "RequestAgentLogout",
            Request::SetReady { ready: true, .. } => "RequestCancelNotReadyForMedia",
            Request::SetReady { ready: false, .. } => "RequestNotReadyForMedia",
            Request::AddMedia { .. } => "RequestAddMedia",
            Request::RemoveMedia { .. } => "RequestRemoveMedia",
            Request::SetDoNotDisturb { .. } => "RequestSetDoNotDisturb",
            Request::GetAgentState { .. } => "RequestGetAgentState",
            Request::Accept { .. } => "RequestAccept",
            Request::Reject { .. } => "RequestReject",
            Request::Deliver { .. } => "RequestDeliver",
            Request::Hold { .. } => "RequestHold",
            Request::Resume { .. } => "RequestResume",
            Request::TransferToAgent { .. } => "RequestTransferToAgent",
            Request::LeaveInteraction { .. } => "RequestLeaveInteraction",
            Request::Subscribe { .. } => "RequestSubscribe",
            Request::Unsubscribe => "RequestUnsubscribe",
        }
    }

    /// Decodes a frame into a request.
    pub fn decode(f: &Frame) -> Result<Request, ProtoError> {
        use msg_type::*;
        Ok(match f.msg_type {
            REQUEST_REGISTER_CLIENT => {
                let code = req_int(f, attr::CLIENT_TYPE, "ClientType")?;
                let client_type = ClientType::from_code(code).ok_or_else(|| {
                    ProtoError::new(ErrorCode::InvalidValue, format!("ClientType {code} is not a known client type"))
                })?;
                Request::RegisterClient {
                    client_type,
                    name: req_str(f, attr::CLIENT_NAME, "ClientName")?,
                    credential: opt_str(f, attr::CREDENTIAL, "Credential")?,
                }
            }
            REQUEST_PING => Request::Ping,
            REQUEST_CLOSE_SESSION => Request::CloseSession,
            REQUEST_SUBMIT => Request::Submit(Box::new(Submit {
                tenant: opt_str(f, attr::TENANT, "Tenant")?.unwrap_or_else(|| "default".into()),
                media_type: req_str(f, attr::MEDIA_TYPE, "MediaType")?,
                interaction_type: opt_str(f, attr::INTERACTION_TYPE, "InteractionType")?
                    .unwrap_or_else(|| "Inbound".into()),
                interaction_subtype: opt_str(f, attr::INTERACTION_SUBTYPE, "InteractionSubtype")?
                    .unwrap_or_else(|| "InboundNew".into()),
                queue: req_str(f, attr::QUEUE, "Queue")?,
                priority: opt_int(f, attr::PRIORITY, "Priority")?.unwrap_or(0),
                properties: opt_list(f, attr::PROPERTIES, "Properties")?.unwrap_or_default(),
                id: opt_str(f, attr::INTERACTION_ID, "InteractionId")?,
                received_at_ms: opt_int(f, attr::RECEIVED_AT, "ReceivedAt")?,
            })),
            REQUEST_GET_INTERACTION_PROPERTIES => {
                Request::GetInteractionProperties { id: req_str(f, attr::INTERACTION_ID, "InteractionId")? }
            }
            REQUEST_CHANGE_PROPERTIES => {
                let changed = opt_list(f, attr::PROPERTIES, "Properties")?.unwrap_or_default();
                let deleted: Vec<String> = opt_list(f, attr::DELETED_KEYS, "DeletedKeys")?
                    .map(|l| l.iter().map(|(k, _)| k.to_string()).collect())
                    .unwrap_or_default();
                Request::ChangeProperties { id: req_str(f, attr::INTERACTION_ID, "InteractionId")?, changed, deleted }
            }
            REQUEST_PLACE_IN_QUEUE => Request::PlaceInQueue {
                id: req_str(f, attr::INTERACTION_ID, "InteractionId")?,
                queue: opt_str(f, attr::QUEUE, "Queue")?,
            },
            REQUEST_STOP_PROCESSING => Request::StopProcessing {
                id: req_str(f, attr::INTERACTION_ID, "InteractionId")?,
                reason: opt_str(f, attr::REASON, "Reason")?,
            },
            REQUEST_PULL => Request::Pull {
                tenant: tenant_or_default(f)?,
                view: req_str(f, attr::VIEW, "View")?,
                count: bounded(f, attr::COUNT, "Count", 1, 1, MAX_PULL_COUNT)?,
            },
            REQUEST_FIND_INTERACTIONS => Request::FindInteractions {
                tenant: opt_str(f, attr::TENANT, "Tenant")?,
                condition: req_str(f, attr::CONDITION, "Condition")?,
                limit: bounded(f, attr::LIMIT, "Limit", DEFAULT_FIND_LIMIT, 1, MAX_FIND_LIMIT)?,
            },
            REQUEST_PLACE_IN_WORKBIN => Request::PlaceInWorkbin {
                id: req_str(f, attr::INTERACTION_ID, "InteractionId")?,
                workbin: req_str(f, attr::WORKBIN, "Workbin")?,
                owner: req_str(f, attr::WORKBIN_OWNER, "WorkbinOwner")?,
            },
            REQUEST_GET_WORKBIN_CONTENT => Request::GetWorkbinContent {
                tenant: tenant_or_default(f)?,
                workbin: req_str(f, attr::WORKBIN, "Workbin")?,
                owner: req_str(f, attr::WORKBIN_OWNER, "WorkbinOwner")?,
            },
            REQUEST_TAKE_SNAPSHOT => Request::TakeSnapshot {
                tenant: opt_str(f, attr::TENANT, "Tenant")?,
                condition: req_str(f, attr::CONDITION, "Condition")?,
                lock: match opt_int(f, attr::LOCK, "Lock")? {
                    None | Some(0) => false,
                    Some(1) => true,
                    Some(v) => {
                        return Err(ProtoError::new(ErrorCode::InvalidValue, format!("Lock must be 0 or 1, not {v}")))
                    }
                },
                limit: match f.get(attr::LIMIT) {
                    None => None,
                    Some(_) => Some(bounded(f, attr::LIMIT, "Limit", 1, 1, u32::MAX)?),
                },
            },
            REQUEST_GET_SNAPSHOT_INTERACTIONS => Request::GetSnapshotInteractions {
                snapshot: snapshot_id(f)?,
                start: bounded(f, attr::START, "Start", 0, 0, u32::MAX)?,
                count: bounded(f, attr::COUNT, "Count", DEFAULT_SNAPSHOT_PAGE, 1, MAX_SNAPSHOT_PAGE)?,
            },
            REQUEST_RELEASE_SNAPSHOT => Request::ReleaseSnapshot { snapshot: snapshot_id(f)? },
            REQUEST_GET_QUEUE_DEPTH => Request::GetQueueDepth { tenant: tenant_or_default(f)? },
            REQUEST_AGENT_LOGIN => Request::AgentLogin {
                tenant: tenant_or_default(f)?,
                agent: req_str(f, attr::AGENT_ID, "AgentId")?,
                place: req_str(f, attr::PLACE, "Place")?,
                media: media_list(f)?,
                reason: opt_str(f, attr::REASON, "Reason")?,
            },
            REQUEST_AGENT_LOGOUT => Request::AgentLogout {
                tenant: tenant_or_default(f)?,
                agent: opt_str(f, attr::AGENT_ID, "AgentId")?,
                reason: opt_str(f, attr::REASON, "Reason")?,
            },
            REQUEST_READY_FOR_MEDIA | REQUEST_NOT_READY_FOR_MEDIA => Request::SetReady {
                tenant: tenant_or_default(f)?,
                agent: opt_str(f, attr::AGENT_ID, "AgentId")?,
                media: opt_str(f, attr::MEDIA_TYPE, "MediaType")?,
                ready: f.msg_type == REQUEST_READY_FOR_MEDIA,
                reason: opt_str(f, attr::REASON, "Reason")?,
            },
            REQUEST_ADD_MEDIA => Request::AddMedia {
                tenant: tenant_or_default(f)?,
                agent: opt_str(f, attr::AGENT_ID, "AgentId")?,
                media: req_str(f, attr::MEDIA_TYPE, "MediaType")?,
                capacity: bounded(f, attr::CAPACITY, "Capacity", 0, 0, u16::MAX as u32)? as u16,
            },
            REQUEST_REMOVE_MEDIA => Request::RemoveMedia {
                tenant: tenant_or_default(f)?,
                agent: opt_str(f, attr::AGENT_ID, "AgentId")?,
                media: req_str(f, attr::MEDIA_TYPE, "MediaType")?,
            },
            REQUEST_SET_DO_NOT_DISTURB => Request::SetDoNotDisturb {
                tenant: tenant_or_default(f)?,
                agent: opt_str(f, attr::AGENT_ID, "AgentId")?,
                on: flag(f, attr::DO_NOT_DISTURB, "DoNotDisturb")?
                    .ok_or_else(|| missing(attr::DO_NOT_DISTURB, "DoNotDisturb"))?,
            },
            REQUEST_GET_AGENT_STATE => {
                Request::GetAgentState { tenant: tenant_or_default(f)?, agent: opt_str(f, attr::AGENT_ID, "AgentId")? }
            }
            REQUEST_ACCEPT => {
                Request::Accept { id: req_str(f, attr::INTERACTION_ID, "InteractionId")?, ticket: ticket(f)? }
            }
            REQUEST_REJECT => Request::Reject {
                id: req_str(f, attr::INTERACTION_ID, "InteractionId")?,
                ticket: ticket(f)?,
                reason: opt_str(f, attr::REASON, "Reason")?,
            },
            REQUEST_DELIVER => Request::Deliver {
                id: req_str(f, attr::INTERACTION_ID, "InteractionId")?,
                agent: req_str(f, attr::AGENT_ID, "AgentId")?,
            },
            REQUEST_HOLD => Request::Hold { id: req_str(f, attr::INTERACTION_ID, "InteractionId")? },
            REQUEST_RESUME => Request::Resume { id: req_str(f, attr::INTERACTION_ID, "InteractionId")? },
            REQUEST_TRANSFER_TO_AGENT => Request::TransferToAgent {
                id: req_str(f, attr::INTERACTION_ID, "InteractionId")?,
                agent: req_str(f, attr::AGENT_ID, "AgentId")?,
            },
            REQUEST_LEAVE_INTERACTION => Request::LeaveInteraction {
                id: req_str(f, attr::INTERACTION_ID, "InteractionId")?,
                queue: opt_str(f, attr::QUEUE, "Queue")?,
            },
            REQUEST_SUBSCRIBE => Request::Subscribe {
                tenant: opt_str(f, attr::TENANT, "Tenant")?,
                cursor: opt_str(f, attr::EVENT_CURSOR, "EventCursor")?,
                with_state: match opt_int(f, attr::WITH_STATE, "WithState")? {
                    None | Some(0) => false,
                    Some(1) => true,
                    Some(n) => {
                        return Err(ProtoError::new(ErrorCode::InvalidValue, format!("WithState {n} is not 0 or 1")))
                    }
                },
            },
            REQUEST_UNSUBSCRIBE => Request::Unsubscribe,
            other => {
                return Err(ProtoError::new(
                    ErrorCode::UnknownMessage,
                    format!("message type {other} is not a request this server knows"),
                ))
            }
        })
    }

    /// Encodes the request as a frame (clients use this).
    pub fn encode(&self, ref_id: u32) -> Frame {
        use msg_type::*;
        match self {
            Request::RegisterClient { client_type, name, credential } => {
                let mut f = Frame::new(REQUEST_REGISTER_CLIENT, ref_id)
                    .with(attr::CLIENT_TYPE, *client_type as i64)
                    .with(attr::CLIENT_NAME, name.as_str());
                if let Some(c) = credential {
                    f.push(attr::CREDENTIAL, c.as_str());
                }
                f
            }
            Request::Ping => Frame::new(REQUEST_PING, ref_id),
            Request::CloseSession => Frame::new(REQUEST_CLOSE_SESSION, ref_id),
            Request::Submit(s) => {
                let mut f = Frame::new(REQUEST_SUBMIT, ref_id)
                    .with(attr::TENANT, s.tenant.as_str())
                    .with(attr::MEDIA_TYPE, s.media_type.as_str())
                    .with(attr::INTERACTION_TYPE, s.interaction_type.as_str())
                    .with(attr::INTERACTION_SUBTYPE, s.interaction_subtype.as_str())
                    .with(attr::QUEUE, s.queue.as_str())
                    .with(attr::PRIORITY, s.priority);
                if !s.properties.is_empty() {
                    f.push(attr::PROPERTIES, s.properties.clone());
                }
                if let Some(id) = &s.id {
                    f.push(attr::INTERACTION_ID, id.as_str());
                }
                if let Some(t) = s.received_at_ms {
                    f.push(attr::RECEIVED_AT, t);
                }
                f
            }
            Request::GetInteractionProperties { id } => {
                Frame::new(REQUEST_GET_INTERACTION_PROPERTIES, ref_id).with(attr::INTERACTION_ID, id.as_str())
            }
            Request::ChangeProperties { id, changed, deleted } => {
                let mut f = Frame::new(REQUEST_CHANGE_PROPERTIES, ref_id).with(attr::INTERACTION_ID, id.as_str());
                if !changed.is_empty() {
                    f.push(attr::PROPERTIES, changed.clone());
                }
                if !deleted.is_empty() {
                    let mut l = KvList::new();
                    for k in deleted {
                        l.push(k.as_str(), Value::Int(0));
                    }
                    f.push(attr::DELETED_KEYS, l);
                }
                f
            }
            Request::PlaceInQueue { id, queue } => {
                let mut f = Frame::new(REQUEST_PLACE_IN_QUEUE, ref_id).with(attr::INTERACTION_ID, id.as_str());
                if let Some(q) = queue {
                    f.push(attr::QUEUE, q.as_str());
                }
                f
            }
            Request::StopProcessing { id, reason } => {
                let mut f = Frame::new(REQUEST_STOP_PROCESSING, ref_id).with(attr::INTERACTION_ID, id.as_str());
                if let Some(r) = reason {
                    f.push(attr::REASON, r.as_str());
                }
                f
            }
            Request::Pull { tenant, view, count } => Frame::new(REQUEST_PULL, ref_id)
                .with(attr::TENANT, tenant.as_str())
                .with(attr::VIEW, view.as_str())
                .with(attr::COUNT, *count as i64),
            Request::FindInteractions { tenant, condition, limit } => {
                let mut f = Frame::new(REQUEST_FIND_INTERACTIONS, ref_id);
                if let Some(t) = tenant {
                    f.push(attr::TENANT, t.as_str());
                }
                f.with(attr::CONDITION, condition.as_str()).with(attr::LIMIT, *limit as i64)
            }
            Request::PlaceInWorkbin { id, workbin, owner } => Frame::new(REQUEST_PLACE_IN_WORKBIN, ref_id)
                .with(attr::INTERACTION_ID, id.as_str())
                .with(attr::WORKBIN, workbin.as_str())
                .with(attr::WORKBIN_OWNER, owner.as_str()),
            Request::GetWorkbinContent { tenant, workbin, owner } => Frame::new(REQUEST_GET_WORKBIN_CONTENT, ref_id)
                .with(attr::TENANT, tenant.as_str())
                .with(attr::WORKBIN, workbin.as_str())
                .with(attr::WORKBIN_OWNER, owner.as_str()),
            Request::TakeSnapshot { tenant, condition, lock, limit } => {
                let mut f = Frame::new(REQUEST_TAKE_SNAPSHOT, ref_id);
                if let Some(t) = tenant {
                    f.push(attr::TENANT, t.as_str());
                }
                f.push(attr::CONDITION, condition.as_str());
                f.push(attr::LOCK, *lock as i64);
                if let Some(l) = limit {
                    f.push(attr::LIMIT, *l as i64);
                }
                f
            }
            Request::GetSnapshotInteractions { snapshot, start, count } => {
                Frame::new(REQUEST_GET_SNAPSHOT_INTERACTIONS, ref_id)
                    .with(attr::SNAPSHOT_ID, *snapshot as i64)
                    .with(attr::START, *start as i64)
                    .with(attr::COUNT, *count as i64)
            }
            Request::ReleaseSnapshot { snapshot } => {
                Frame::new(REQUEST_RELEASE_SNAPSHOT, ref_id).with(attr::SNAPSHOT_ID, *snapshot as i64)
            }
            Request::GetQueueDepth { tenant } => {
                Frame::new(REQUEST_GET_QUEUE_DEPTH, ref_id).with(attr::TENANT, tenant.as_str())
            }
            Request::AgentLogin { tenant, agent, place, media, reason } => {
                let mut l = KvList::new();
                for (m, c) in media {
                    l.push(m.as_str(), Value::Int(*c as i64));
                }
                let mut f = Frame::new(REQUEST_AGENT_LOGIN, ref_id)
                    .with(attr::TENANT, tenant.as_str())
                    .with(attr::AGENT_ID, agent.as_str())
                    .with(attr::PLACE, place.as_str())
                    .with(attr::MEDIA_LIST, l);
                push_opt(&mut f, attr::REASON, reason);
                f
            }
            Request::AgentLogout { tenant, agent, reason } => {
                let mut f = agent_frame(REQUEST_AGENT_LOGOUT, ref_id, tenant, agent);
                push_opt(&mut f, attr::REASON, reason);
                f
            }
            Request::SetReady { tenant, agent, media, ready, reason } => {
                let t = if *ready { REQUEST_READY_FOR_MEDIA } else { REQUEST_NOT_READY_FOR_MEDIA };
                let mut f = agent_frame(t, ref_id, tenant, agent);
                push_opt(&mut f, attr::MEDIA_TYPE, media);
                push_opt(&mut f, attr::REASON, reason);
                f
            }
            Request::AddMedia { tenant, agent, media, capacity } => {
                agent_frame(REQUEST_ADD_MEDIA, ref_id, tenant, agent)
                    .with(attr::MEDIA_TYPE, media.as_str())
                    .with(attr::CAPACITY, *capacity as i64)
            }
            Request::RemoveMedia { tenant, agent, media } => {
                agent_frame(REQUEST_REMOVE_MEDIA, ref_id, tenant, agent).with(attr::MEDIA_TYPE, media.as_str())
            }
            Request::SetDoNotDisturb { tenant, agent, on } => {
                agent_frame(REQUEST_SET_DO_NOT_DISTURB, ref_id, tenant, agent).with(attr::DO_NOT_DISTURB, *on as i64)
            }
            Request::GetAgentState { tenant, agent } => agent_frame(REQUEST_GET_AGENT_STATE, ref_id, tenant, agent),
            Request::Accept { id, ticket } => {
                let mut f = Frame::new(REQUEST_ACCEPT, ref_id).with(attr::INTERACTION_ID, id.as_str());
                if let Some(t) = ticket {
                    f.push(attr::TICKET, *t as i64);
                }
                f
            }
            Request::Reject { id, ticket, reason } => {
                let mut f = Frame::new(REQUEST_REJECT, ref_id).with(attr::INTERACTION_ID, id.as_str());
                if let Some(t) = ticket {
                    f.push(attr::TICKET, *t as i64);
                }
                push_opt(&mut f, attr::REASON, reason);
                f
            }
            Request::Deliver { id, agent } => Frame::new(REQUEST_DELIVER, ref_id)
                .with(attr::INTERACTION_ID, id.as_str())
                .with(attr::AGENT_ID, agent.as_str()),
            Request::Hold { id } => Frame::new(REQUEST_HOLD, ref_id).with(attr::INTERACTION_ID, id.as_str()),
            Request::Resume { id } => Frame::new(REQUEST_RESUME, ref_id).with(attr::INTERACTION_ID, id.as_str()),
            Request::TransferToAgent { id, agent } => Frame::new(REQUEST_TRANSFER_TO_AGENT, ref_id)
                .with(attr::INTERACTION_ID, id.as_str())
                .with(attr::AGENT_ID, agent.as_str()),
            Request::LeaveInteraction { id, queue } => {
                let mut f = Frame::new(REQUEST_LEAVE_INTERACTION, ref_id).with(attr::INTERACTION_ID, id.as_str());
                push_opt(&mut f, attr::QUEUE, queue);
                f
            }
            Request::Subscribe { tenant, cursor, with_state } => {
                let mut f = Frame::new(REQUEST_SUBSCRIBE, ref_id);
                push_opt(&mut f, attr::TENANT, tenant);
                push_opt(&mut f, attr::EVENT_CURSOR, cursor);
                if *with_state {
                    f.push(attr::WITH_STATE, 1i64);
                }
                f
            }
            Request::Unsubscribe => Frame::new(REQUEST_UNSUBSCRIBE, ref_id),
        }
    }
}

fn push_opt(f: &mut Frame, id: u16, v: &Option<String>) {
    if let Some(v) = v {
        f.push(id, v.as_str());
    }
}

/// A frame about an agent: the tenant, and the agent if named.
fn agent_frame(t: u16, ref_id: u32, tenant: &str, agent: &Option<String>) -> Frame {
    let mut f = Frame::new(t, ref_id).with(attr::TENANT, tenant);
    push_opt(&mut f, attr::AGENT_ID, agent);
    f
}

/// An optional 0/1 attribute.
fn flag(f: &Frame, id: u16, name: &str) -> Result<Option<bool>, ProtoError> {
    match opt_int(f, id, name)? {
        None => Ok(None),
        Some(0) => Ok(Some(false)),
        Some(1) => Ok(Some(true)),
        Some(v) => Err(ProtoError::new(ErrorCode::InvalidValue, format!("{name} must be 0 or 1, not {v}"))),
    }
}

fn ticket(f: &Frame) -> Result<Option<u64>, ProtoError> {
    match opt_int(f, attr::TICKET, "Ticket")? {
        None => Ok(None),
        Some(v) if v > 0 => Ok(Some(v as u64)),
        Some(v) => Err(ProtoError::new(ErrorCode::InvalidValue, format!("Ticket must be positive, not {v}"))),
    }
}

/// Most media types one login names.
pub const MAX_LOGIN_MEDIA: usize = 64;

/// RequestAgentLogin's MediaList: media name -> int capacity (0 to 65535).
fn media_list(f: &Frame) -> Result<Vec<(String, u16)>, ProtoError> {
    let l = opt_list(f, attr::MEDIA_LIST, "MediaList")?.unwrap_or_default();
    if l.len() > MAX_LOGIN_MEDIA {
        return Err(ProtoError::new(
            ErrorCode::InvalidValue,
            format!("MediaList names {} media types; at most {MAX_LOGIN_MEDIA}", l.len()),
        ));
    }
    let mut out = Vec::with_capacity(l.len());
    for (k, v) in l.iter() {
        let c = match v {
            Value::Int(c) if (0..=u16::MAX as i64).contains(c) => *c as u16,
            Value::Int(c) => {
                return Err(ProtoError::new(
                    ErrorCode::InvalidValue,
                    format!("MediaList capacity for '{k}' must be 0 to {}, not {c}", u16::MAX),
                ))
            }
            other => {
                return Err(ProtoError::new(
                    ErrorCode::WrongAttributeType,
                    format!("MediaList value for '{k}' must be int, got {}", other.type_name()),
                ))
            }
        };
        if out.iter().any(|(m, _): &(String, u16)| m == k) {
            return Err(ProtoError::new(ErrorCode::InvalidValue, format!("MediaList names '{k}' twice")));
        }
        out.push((k.to_string(), c));
    }
    Ok(out)
}

/// The Tenant attribute, `default` when absent.
fn tenant_or_default(f: &Frame) -> Result<String, ProtoError> {
    Ok(opt_str(f, attr::TENANT, "Tenant")?.unwrap_or_else(|| "default".into()))
}

/// An optional int attribute that must lie in `min..=max`; `default` when absent.
fn bounded(f: &Frame, id: u16, name: &str, default: u32, min: u32, max: u32) -> Result<u32, ProtoError> {
    match opt_int(f, id, name)? {
        None => Ok(default),
        Some(v) if v >= min as i64 && v <= max as i64 => Ok(v as u32),
        Some(v) => Err(ProtoError::new(ErrorCode::InvalidValue, format!("{name} must be {min} to {max}, not {v}"))),
    }
}

fn snapshot_id(f: &Frame) -> Result<u64, ProtoError> {
    let v = req_int(f, attr::SNAPSHOT_ID, "SnapshotId")?;
    u64::try_from(v)
        .map_err(|_| ProtoError::new(ErrorCode::InvalidValue, format!("SnapshotId must not be negative, not {v}")))
}

/// EventError for a request.
pub fn event_error(ref_id: u32, err: &ProtoError) -> Frame {
    Frame::new(msg_type::EVENT_ERROR, ref_id)
        .with(attr::ERROR_CODE, err.code.code())
        .with(attr::ERROR_TEXT, err.text.as_str())
}

/// Shortest heartbeat timeout a client may ask for, in milliseconds: the
/// client must send a frame at least this often, and the server keeps a
/// timer per connection that asks.
pub const MIN_HEARTBEAT_TIMEOUT_MS: i64 = 1000;
/// Longest heartbeat timeout a client may ask for, in milliseconds (a day).
pub const MAX_HEARTBEAT_TIMEOUT_MS: i64 = 86_400_000;

/// The heartbeat a RequestRegisterClient asks for (attribute
/// HeartbeatTimeout, milliseconds): `None` when absent or 0 (no
/// heartbeats), else 1000 to 86400000 (error 14 outside, 13 if not an int).
/// Read by the connection layer, which enforces it; the state machine does
/// not see it.
pub fn heartbeat_timeout_of(f: &Frame) -> Result<Option<u32>, ProtoError> {
    match opt_int(f, attr::HEARTBEAT_TIMEOUT, "HeartbeatTimeout")? {
        None | Some(0) => Ok(None),
        Some(ms) if (MIN_HEARTBEAT_TIMEOUT_MS..=MAX_HEARTBEAT_TIMEOUT_MS).contains(&ms) => Ok(Some(ms as u32)),
        Some(ms) => Err(ProtoError::new(
            ErrorCode::InvalidValue,
            format!(
                "HeartbeatTimeout {ms} must be 0 (no heartbeats) or {MIN_HEARTBEAT_TIMEOUT_MS} to \
                 {MAX_HEARTBEAT_TIMEOUT_MS} milliseconds"
            ),
        )),
    }
}

/// Largest SessionId a client may use.
pub const MAX_SESSION_ID: i64 = i32::MAX as i64;

/// The session a request acts for (attribute SessionId): 0 when absent or
/// 0 (the connection's own session), else 1 to 2^31-1 (error 14 outside,
/// 13 if not an int). Read by the connection layer, which keeps the
/// sessions; the state machine sees it only inside [`crate::machine::Origin`].
pub fn session_id_of(f: &Frame) -> Result<u32, ProtoError> {
    match opt_int(f, attr::SESSION_ID, "SessionId")? {
        None => Ok(0),
        Some(id) if (0..=MAX_SESSION_ID).contains(&id) => Ok(id as u32),
        Some(id) => Err(ProtoError::new(
            ErrorCode::InvalidValue,
            format!("SessionId {id} must be 0 (the connection's own session) or 1 to {MAX_SESSION_ID}"),
        )),
    }
}

/// A plain EventAck.
pub fn event_ack(ref_id: u32) -> Frame {
    Frame::new(msg_type::EVENT_ACK, ref_id)
}

/// Reads an EventError back into a [`ProtoError`] (clients).
pub fn error_of(f: &Frame) -> Option<ProtoError> {
    if f.msg_type != msg_type::EVENT_ERROR {
        return None;
    }
    let code = f.get_int(attr::ERROR_CODE).and_then(ErrorCode::from_code).unwrap_or(ErrorCode::Internal);
    let text = f.get_str(attr::ERROR_TEXT).unwrap_or("").to_string();
    Some(ProtoError { code, text })
}

fn find<'a>(f: &'a Frame, id: u16, name: &str, tag: u8) -> Result<Option<&'a Value>, ProtoError> {
    match f.get(id) {
        None => Ok(None),
        Some(v) if v.tag() == tag => Ok(Some(v)),
        Some(v) => Err(ProtoError::new(
            ErrorCode::WrongAttributeType,
            format!("attribute {name} ({id}) must be {}, got {}", type_name(tag), v.type_name()),
        )),
    }
}

fn missing(id: u16, name: &str) -> ProtoError {
    ProtoError::new(ErrorCode::MissingAttribute, format!("attribute {name} ({id}) is required"))
}

fn opt_str(f: &Frame, id: u16, name: &str) -> Result<Option<String>, ProtoError> {
    Ok(find(f, id, name, TAG_STR)?.and_then(Value::as_str).map(str::to_owned))
}

fn req_str(f: &Frame, id: u16, name: &str) -> Result<String, ProtoError> {
    opt_str(f, id, name)?.ok_or_else(|| missing(id, name))
}

fn opt_int(f: &Frame, id: u16, name: &str) -> Result<Option<i64>, ProtoError> {
    Ok(find(f, id, name, TAG_INT)?.and_then(Value::as_int))
}

fn req_int(f: &Frame, id: u16, name: &str) -> Result<i64, ProtoError> {
    opt_int(f, id, name)?.ok_or_else(|| missing(id, name))
}

fn opt_list(f: &Frame, id: u16, name: &str) -> Result<Option<KvList>, ProtoError> {
    Ok(find(f, id, name, TAG_LIST)?.and_then(Value::as_list).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv;

    #[test]
    fn heartbeat_timeouts_are_read_and_bounded() {
        let reg = Request::RegisterClient { client_type: ClientType::AgentDesktop, name: "d".into(), credential: None };
        assert_eq!(heartbeat_timeout_of(&reg.encode(1)), Ok(None));
        assert_eq!(heartbeat_timeout_of(&reg.encode(1).with(attr::HEARTBEAT_TIMEOUT, 0i64)), Ok(None));
        assert_eq!(heartbeat_timeout_of(&reg.encode(1).with(attr::HEARTBEAT_TIMEOUT, 1000i64)), Ok(Some(1000)));
        assert_eq!(
            heartbeat_timeout_of(&reg.encode(1).with(attr::HEARTBEAT_TIMEOUT, 86_400_000i64)),
            Ok(Some(86_400_000))
        );
        for bad in [-1i64, 999, 86_400_001] {
            let e = heartbeat_timeout_of(&reg.encode(1).with(attr::HEARTBEAT_TIMEOUT, bad)).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidValue, "{bad}");
        }
        let e = heartbeat_timeout_of(&reg.encode(1).with(attr::HEARTBEAT_TIMEOUT, "1000")).unwrap_err();
        assert_eq!(e.code, ErrorCode::WrongAttributeType);
    }

    #[test]
    fn requests_round_trip_through_frames() {
        let reqs = vec![
            Request::RegisterClient { client_type: ClientType::MediaServer, name: "chat1".into(), credential: None },
            Request::Ping,
            Request::CloseSession,
            Request::Submit(Box::new(Submit {
                tenant: "default".into(),
                media_type: "chat".into(),
                interaction_type: "Inbound".into(),
                interaction_subtype: "InboundNew".into(),
                queue: "inbound".into(),
                priority: 3,
                properties: kv![("lang", "en")],
                id: Some("X1".into()),
                received_at_ms: Some(5),
            })),
            Request::ChangeProperties { id: "a".into(), changed: kv![("k", 1)], deleted: vec!["z".into()] },
            Request::PlaceInQueue { id: "a".into(), queue: Some("done".into()) },
            Request::PlaceInQueue { id: "a".into(), queue: None },
            Request::Pull { tenant: "default".into(), view: "v".into(), count: 3 },
            Request::FindInteractions { tenant: None, condition: "priority > 1".into(), limit: 10 },
            Request::FindInteractions { tenant: Some("t".into()), condition: "x = 'y'".into(), limit: 1 },
            Request::PlaceInWorkbin { id: "a".into(), workbin: "personal".into(), owner: "agent1".into() },
            Request::GetWorkbinContent { tenant: "default".into(), workbin: "w".into(), owner: "o".into() },
            Request::TakeSnapshot { tenant: None, condition: "priority > 1".into(), lock: true, limit: Some(7) },
            Request::TakeSnapshot { tenant: Some("t".into()), condition: "a IS NULL".into(), lock: false, limit: None },
            Request::GetSnapshotInteractions { snapshot: 4, start: 0, count: 10 },
            Request::ReleaseSnapshot { snapshot: 4 },
            Request::GetQueueDepth { tenant: "default".into() },
            Request::StopProcessing { id: "a".into(), reason: Some("done".into()) },
            Request::GetInteractionProperties { id: "a".into() },
            Request::AgentLogin {
                tenant: "default".into(),
                agent: "agent1".into(),
                place: "place1".into(),
                media: vec![("chat".into(), 3), ("email".into(), 0)],
                reason: Some("start".into()),
            },
            Request::AgentLogout { tenant: "default".into(), agent: None, reason: None },
            Request::SetReady {
                tenant: "default".into(),
                agent: Some("a".into()),
                media: Some("chat".into()),
                ready: true,
                reason: None,
            },
            Request::SetReady {
                tenant: "t".into(),
                agent: None,
                media: None,
                ready: false,
                reason: Some("break".into()),
            },
            Request::AddMedia { tenant: "default".into(), agent: None, media: "sms".into(), capacity: 2 },
            Request::RemoveMedia { tenant: "default".into(), agent: None, media: "sms".into() },
            Request::SetDoNotDisturb { tenant: "default".into(), agent: None, on: true },
            Request::GetAgentState { tenant: "default".into(), agent: None },
            Request::Accept { id: "a".into(), ticket: Some(4) },
            Request::Reject { id: "a".into(), ticket: None, reason: Some("busy".into()) },
            Request::Deliver { id: "a".into(), agent: "agent2".into() },
            Request::Hold { id: "a".into() },
            Request::Resume { id: "a".into() },
            Request::TransferToAgent { id: "a".into(), agent: "agent3".into() },
            Request::LeaveInteraction { id: "a".into(), queue: Some("inbound".into()) },
            Request::Subscribe { tenant: None, cursor: None, with_state: false },
            Request::Subscribe { tenant: Some("default".into()), cursor: Some("17:3,0".into()), with_state: false },
            Request::Subscribe { tenant: None, cursor: None, with_state: true },
            Request::Unsubscribe,
        ];
        for r in reqs {
            assert_eq!(Request::decode(&r.encode(9)).unwrap(), r);
        }
    }

    #[test]
    fn wrong_type_and_missing_attributes_are_reported() {
        let f = Frame::new(msg_type::REQUEST_SUBMIT, 1).with(attr::MEDIA_TYPE, 5i64).with(attr::QUEUE, "q");
        assert_eq!(Request::decode(&f).unwrap_err().code, ErrorCode::WrongAttributeType);
        let f = Frame::new(msg_type::REQUEST_SUBMIT, 1).with(attr::MEDIA_TYPE, "chat");
        assert_eq!(Request::decode(&f).unwrap_err().code, ErrorCode::MissingAttribute);
        let f = Frame::new(999, 1);
        assert_eq!(Request::decode(&f).unwrap_err().code, ErrorCode::UnknownMessage);
    }
}
