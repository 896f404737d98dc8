//! Message types, attribute ids, client types and error codes of protocol
//! v1. docs/protocol.md is the specification; these numbers must match it.

/// Message type numbers. Requests are below 128, events from 128 up.
pub mod msg_type {
    pub const REQUEST_REGISTER_CLIENT: u16 = 1;
    pub const REQUEST_PING: u16 = 2;
    /// Ends one session of the connection (the one its SessionId names).
    pub const REQUEST_CLOSE_SESSION: u16 = 3;
    pub const REQUEST_SUBMIT: u16 = 16;
    pub const REQUEST_GET_INTERACTION_PROPERTIES: u16 = 17;
    pub const REQUEST_CHANGE_PROPERTIES: u16 = 18;
    pub const REQUEST_PLACE_IN_QUEUE: u16 = 19;
    pub const REQUEST_STOP_PROCESSING: u16 = 20;
    pub const REQUEST_PULL: u16 = 21;
    pub const REQUEST_FIND_INTERACTIONS: u16 = 22;
    pub const REQUEST_PLACE_IN_WORKBIN: u16 = 23;
    pub const REQUEST_GET_WORKBIN_CONTENT: u16 = 24;
    pub const REQUEST_TAKE_SNAPSHOT: u16 = 25;
    pub const REQUEST_GET_SNAPSHOT_INTERACTIONS: u16 = 26;
    pub const REQUEST_RELEASE_SNAPSHOT: u16 = 27;
    pub const REQUEST_GET_QUEUE_DEPTH: u16 = 28;
    pub const REQUEST_AGENT_LOGIN: u16 = 40;
    pub const REQUEST_AGENT_LOGOUT: u16 = 41;
    /// RequestCancelNotReadyForMedia: ready for one media type, or all.
    pub const REQUEST_READY_FOR_MEDIA: u16 = 42;
    pub const REQUEST_NOT_READY_FOR_MEDIA: u16 = 43;
    pub const REQUEST_ADD_MEDIA: u16 = 44;
    pub const REQUEST_REMOVE_MEDIA: u16 = 45;
    pub const REQUEST_SET_DO_NOT_DISTURB: u16 = 46;
    pub const REQUEST_GET_AGENT_STATE: u16 = 47;
    pub const REQUEST_ACCEPT: u16 = 48;
    pub const REQUEST_REJECT: u16 = 49;
    pub const REQUEST_DELIVER: u16 = 50;
    pub const REQUEST_HOLD: u16 = 51;
    pub const REQUEST_RESUME: u16 = 52;
    pub const REQUEST_TRANSFER_TO_AGENT: u16 = 53;
    pub const REQUEST_LEAVE_INTERACTION: u16 = 54;
    pub const REQUEST_SUBSCRIBE: u16 = 55;
    pub const REQUEST_UNSUBSCRIBE: u16 = 56;

    pub const EVENT_ACK: u16 = 128;
    pub const EVENT_ERROR: u16 = 129;
    pub const EVENT_INTERACTION_PROPERTIES: u16 = 144;
    pub const EVENT_PULLED_INTERACTIONS: u16 = 145;
    pub const EVENT_INTERACTIONS_FOUND: u16 = 146;
    pub const EVENT_WORKBIN_CONTENT: u16 = 147;
    pub const EVENT_SNAPSHOT_TAKEN: u16 = 148;
    pub const EVENT_SNAPSHOT_INTERACTIONS: u16 = 149;
    pub const EVENT_QUEUE_DEPTH: u16 = 150;
    /// Answer to RequestGetAgentState: one AGENT_STATE list per agent.
    pub const EVENT_AGENT_STATE: u16 = 151;

    // Unsolicited events to agent desktops (reference id 0).
    /// An interaction is offered to the agent: accept or reject it.
    pub const EVENT_INVITE: u16 = 160;
    /// An invitation ended without an accept (time-out, logout, the
    /// interaction moved or stopped).
    pub const EVENT_REVOKED: u16 = 161;
    /// The agent's connection was logged out by the server (another
    /// connection forced it out, the login session timed out, an operator).
    pub const EVENT_LOGGED_OUT: u16 = 162;

    // Reporting events, to subscribed reporting clients (reference id 0).
    pub const EVENT_INTERACTION_SUBMITTED: u16 = 176;
    pub const EVENT_PLACED_IN_QUEUE: u16 = 177;
    pub const EVENT_TAKEN_FROM_QUEUE: u16 = 178;
    pub const EVENT_AGENT_INVITED: u16 = 179;
    pub const EVENT_INVITE_REVOKED: u16 = 180;
    pub const EVENT_REJECTED: u16 = 181;
    pub const EVENT_PARTY_ADDED: u16 = 182;
    pub const EVENT_PARTY_REMOVED: u16 = 183;
    pub const EVENT_PROPERTIES_CHANGED: u16 = 184;
    pub const EVENT_HELD: u16 = 185;
    pub const EVENT_RESUMED: u16 = 186;
    pub const EVENT_PLACED_IN_WORKBIN: u16 = 187;
    pub const EVENT_TAKEN_FROM_WORKBIN: u16 = 188;
    pub const EVENT_PROCESSING_STOPPED: u16 = 189;
    pub const EVENT_AGENT_LOGIN: u16 = 190;
    pub const EVENT_AGENT_LOGOUT: u16 = 191;
    pub const EVENT_READY_FOR_MEDIA: u16 = 192;
    pub const EVENT_NOT_READY_FOR_MEDIA: u16 = 193;
    pub const EVENT_MEDIA_ADDED: u16 = 194;
    pub const EVENT_MEDIA_REMOVED: u16 = 195;
    pub const EVENT_DO_NOT_DISTURB_ON: u16 = 196;
    pub const EVENT_DO_NOT_DISTURB_OFF: u16 = 197;
    /// The state of agents and queues a subscription asked for, as of its
    /// cursor; sent before its events (not a reporting event itself).
    pub const EVENT_REPORTING_STATE: u16 = 198;

    /// Whether `t` is a reporting event (sent to subscribers).
    pub fn is_reporting(t: u16) -> bool {
        (EVENT_INTERACTION_SUBMITTED..=EVENT_DO_NOT_DISTURB_OFF).contains(&t)
    }

    /// Name of a message type, for logs and the CLI.
    pub fn name(t: u16) -> &'static str {
        match t {
            REQUEST_REGISTER_CLIENT => "RequestRegisterClient",
            REQUEST_PING => "RequestPing",
            REQUEST_CLOSE_SESSION => "RequestCloseSession",
            REQUEST_SUBMIT => "RequestSubmit",
            REQUEST_GET_INTERACTION_PROPERTIES => "RequestGetInteractionProperties",
            REQUEST_CHANGE_PROPERTIES => "RequestChangeProperties",
            REQUEST_PLACE_IN_QUEUE => "RequestPlaceInQueue",
            REQUEST_STOP_PROCESSING => "RequestStopProcessing",
            REQUEST_PULL => "RequestPull",
            REQUEST_FIND_INTERACTIONS => "RequestFindInteractions",
            REQUEST_PLACE_IN_WORKBIN => "RequestPlaceInWorkbin",
            REQUEST_GET_WORKBIN_CONTENT => "RequestGetWorkbinContent",
            REQUEST_TAKE_SNAPSHOT => "RequestTakeSnapshot",
            REQUEST_GET_SNAPSHOT_INTERACTIONS => "RequestGetSnapshotInteractions",
            REQUEST_RELEASE_SNAPSHOT => "RequestReleaseSnapshot",
            REQUEST_GET_QUEUE_DEPTH => "RequestGetQueueDepth",
            EVENT_ACK => "EventAck",
            EVENT_ERROR => "EventError",
            EVENT_INTERACTION_PROPERTIES => "EventInteractionProperties",
            EVENT_PULLED_INTERACTIONS => "EventPulledInteractions",
            EVENT_INTERACTIONS_FOUND => "EventInteractionsFound",
            EVENT_WORKBIN_CONTENT => "EventWorkbinContent",
            EVENT_SNAPSHOT_TAKEN => "EventSnapshotTaken",
            EVENT_SNAPSHOT_INTERACTIONS => "EventSnapshotInteractions",
            EVENT_QUEUE_DEPTH => "EventQueueDepth",
            REQUEST_AGENT_LOGIN => "RequestAgentLogin",
            REQUEST_AGENT_LOGOUT => "RequestAgentLogout",
            REQUEST_READY_FOR_MEDIA => "RequestCancelNotReadyForMedia",
            REQUEST_NOT_READY_FOR_MEDIA => "RequestNotReadyForMedia",
            REQUEST_ADD_MEDIA => "RequestAddMedia",
            REQUEST_REMOVE_MEDIA => "RequestRemoveMedia",
            REQUEST_SET_DO_NOT_DISTURB => "RequestSetDoNotDisturb",
            REQUEST_GET_AGENT_STATE => "RequestGetAgentState",
            REQUEST_ACCEPT => "RequestAccept",
            REQUEST_REJECT => "RequestReject",
            REQUEST_DELIVER => "RequestDeliver",
            REQUEST_HOLD => "RequestHold",
            REQUEST_RESUME => "RequestResume",
            REQUEST_TRANSFER_TO_AGENT => "RequestTransferToAgent",
            REQUEST_LEAVE_INTERACTION => "RequestLeaveInteraction",
            REQUEST_SUBSCRIBE => "RequestSubscribe",
            REQUEST_UNSUBSCRIBE => "RequestUnsubscribe",
            EVENT_AGENT_STATE => "EventAgentState",
            EVENT_INVITE => "EventInvite",
            EVENT_REVOKED => "EventRevoked",
            EVENT_LOGGED_OUT => "EventLoggedOut",
            EVENT_INTERACTION_SUBMITTED => "EventInteractionSubmitted",
            EVENT_PLACED_IN_QUEUE => "EventPlacedInQueue",
            EVENT_TAKEN_FROM_QUEUE => "EventTakenFromQueue",
            EVENT_AGENT_INVITED => "EventAgentInvited",
            EVENT_INVITE_REVOKED => "EventInviteRevoked",
            EVENT_REJECTED => "EventRejected",
            EVENT_PARTY_ADDED => "EventPartyAdded",
            EVENT_PARTY_REMOVED => "EventPartyRemoved",
            EVENT_PROPERTIES_CHANGED => "EventPropertiesChanged",
            EVENT_HELD => "EventHeld",
            EVENT_RESUMED => "EventResumed",
            EVENT_PLACED_IN_WORKBIN => "EventPlacedInWorkbin",
            EVENT_TAKEN_FROM_WORKBIN => "EventTakenFromWorkbin",
            EVENT_PROCESSING_STOPPED => "EventProcessingStopped",
            EVENT_AGENT_LOGIN => "EventAgentLogin",
            EVENT_AGENT_LOGOUT => "EventAgentLogout",
            EVENT_READY_FOR_MEDIA => "EventReadyForMedia",
            EVENT_NOT_READY_FOR_MEDIA => "EventNotReadyForMedia",
            EVENT_MEDIA_ADDED => "EventMediaAdded",
            EVENT_MEDIA_REMOVED => "EventMediaRemoved",
            EVENT_DO_NOT_DISTURB_ON => "EventDoNotDisturbOn",
            EVENT_DO_NOT_DISTURB_OFF => "EventDoNotDisturbOff",
            EVENT_REPORTING_STATE => "EventReportingState",
            _ => "Unknown",
        }
    }
}

/// Attribute ids and the value type each must have.
pub mod attr {
    /// int: a [`super::ClientType`] number.
    pub const CLIENT_TYPE: u16 = 1;
    /// string: the client's application name.
    pub const CLIENT_NAME: u16 = 2;
    /// string: the client's password.
    pub const CREDENTIAL: u16 = 3;
    /// int: an [`super::ErrorCode`] number.
    pub const ERROR_CODE: u16 = 4;
    /// string: what went wrong, for people.
    pub const ERROR_TEXT: u16 = 5;
    /// string: the server's application name.
    pub const SERVER_NAME: u16 = 6;
    /// int: the node id of the server (0-255).
    pub const NODE_ID: u16 = 7;
    /// int: protocol version the server speaks.
    pub const PROTOCOL_VERSION: u16 = 8;
    /// int: number of shards (executors) the server runs.
    pub const SHARD_COUNT: u16 = 9;
    /// int: milliseconds. In RequestRegisterClient, the client asks for
    /// heartbeats: the server closes the connection when it has received
    /// nothing from the client for this long. Echoed in the EventAck when
    /// granted. docs/protocol.md, "Heartbeats".
    pub const HEARTBEAT_TIMEOUT: u16 = 10;
    /// int: 1 to 2^31-1. The session of the connection a request acts for
    /// (absent: the connection's own); every answer and event for that
    /// session carries it. docs/protocol.md, "Sessions".
    pub const SESSION_ID: u16 = 11;

    /// string: interaction id.
    pub const INTERACTION_ID: u16 = 16;
    /// string: tenant name.
    pub const TENANT: u16 = 17;
    /// string: media type name.
    pub const MEDIA_TYPE: u16 = 18;
    /// string: interaction type (Inbound, Outbound, Internal...).
    pub const INTERACTION_TYPE: u16 = 19;
    /// string: interaction subtype (InboundNew, OutboundReply...).
    pub const INTERACTION_SUBTYPE: u16 = 20;
    /// string: queue name.
    pub const QUEUE: u16 = 21;
    /// int: priority; larger is more urgent.
    pub const PRIORITY: u16 = 22;
    /// list: properties (on submit, get) or properties to add or change.
    pub const PROPERTIES: u16 = 23;
    /// list: keys to delete (values ignored).
    pub const DELETED_KEYS: u16 = 24;
    /// string: why (for example why processing stopped).
    pub const REASON: u16 = 25;
    /// string: name of the client that submitted.
    pub const SUBMITTED_BY: u16 = 27;
    /// int: milliseconds since the Unix epoch.
    pub const RECEIVED_AT: u16 = 28;
    pub const SUBMITTED_AT: u16 = 29;
    pub const PLACED_IN_QUEUE_AT: u16 = 30;
    pub const MOVED_TO_QUEUE_AT: u16 = 31;
    pub const DELIVERED_AT: u16 = 32;
    pub const ASSIGNED_AT: u16 = 33;
    pub const HELD_AT: u16 = 34;
    pub const COMPLETED_AT: u16 = 35;
    /// int: time on the server, milliseconds since the Unix epoch.
    pub const SERVER_TIME: u16 = 36;
    /// string: business process that owns the queue.
    pub const BUSINESS_PROCESS: u16 = 37;
    /// int: number of changes made to the interaction since submission.
    pub const VERSION: u16 = 38;
    /// string: view name.
    pub const VIEW: u16 = 39;
    /// int: how many (interactions to pull, to read from a snapshot; or
    /// how many an answer describes).
    pub const COUNT: u16 = 40;
    /// list: one interaction, as in docs/protocol.md "Interaction lists".
    /// Repeated, in order, in answers that describe several.
    pub const INTERACTION: u16 = 41;
    /// string: a condition (docs/conditions.md).
    pub const CONDITION: u16 = 42;
    /// int: most interactions to return or to hold.
    pub const LIMIT: u16 = 43;
    /// string: workbin name.
    pub const WORKBIN: u16 = 44;
    /// string: who owns a workbin's content (an agent, place or group name).
    pub const WORKBIN_OWNER: u16 = 45;
    /// int: 1 to lock, 0 not to.
    pub const LOCK: u16 = 46;
    /// int: snapshot id.
    pub const SNAPSHOT_ID: u16 = 47;
    /// int: 0-based position of the first entry to read.
    pub const START: u16 = 48;
    /// list: one queue's depth. Repeated, one per queue.
    pub const QUEUE_DEPTH: u16 = 49;
    /// int: how many matched in all (an answer may describe fewer).
    pub const TOTAL: u16 = 50;

    /// string: an agent's login id.
    pub const AGENT_ID: u16 = 64;
    /// string: a place name.
    pub const PLACE: u16 = 65;
    /// list: media type name -> int capacity (RequestAgentLogin: the media
    /// to log in on; 0 or a capacity above the configured one means the
    /// configured capacity).
    pub const MEDIA_LIST: u16 = 66;
    /// int: how many interactions of one media type at once.
    pub const CAPACITY: u16 = 67;
    /// int: 1 on, 0 off (do-not-disturb).
    pub const DO_NOT_DISTURB: u16 = 68;
    /// int: the number of one invitation, given in EventInvite and named
    /// again by RequestAccept and RequestReject.
    pub const TICKET: u16 = 69;
    /// list: one agent's state (docs/protocol.md "Agent state"). Repeated.
    pub const AGENT_STATE: u16 = 70;
    /// int: a reporting event's number on the subscriber's connection,
    /// 1, 2, 3... with no gaps.
    pub const EVENT_SEQUENCE: u16 = 71;
    /// int: when the event happened, milliseconds since the Unix epoch.
    pub const EVENT_TIME: u16 = 72;
    /// string: the queue an interaction came from or was in.
    pub const FROM_QUEUE: u16 = 73;
    /// string: the agent an interaction came from (transfers).
    pub const FROM_AGENT: u16 = 74;
    /// string: where a subscriber is in the reporting stream (in every
    /// reporting event; RequestSubscribe resumes after it).
    pub const EVENT_CURSOR: u16 = 75;
    /// int: RequestSubscribe: 1 asks for the current state first
    /// (EventReportingState).
    pub const WITH_STATE: u16 = 76;
}

/// What kind of application a client is; decides what it may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientType {
    MediaServer = 1,
    AgentDesktop = 2,
    RoutingEngine = 3,
    ReportingEngine = 4,
    Proxy = 5,
    /// Operator tools such as ixnctl: may do everything.
    Operator = 6,
}

impl ClientType {
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => ClientType::MediaServer,
            2 => ClientType::AgentDesktop,
            3 => ClientType::RoutingEngine,
            4 => ClientType::ReportingEngine,
            5 => ClientType::Proxy,
            6 => ClientType::Operator,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ClientType::MediaServer => "media-server",
            ClientType::AgentDesktop => "agent-desktop",
            ClientType::RoutingEngine => "routing-engine",
            ClientType::ReportingEngine => "reporting-engine",
            ClientType::Proxy => "proxy",
            ClientType::Operator => "operator",
        }
    }

    /// Every client type.
    pub const ALL: [ClientType; 6] = [
        ClientType::MediaServer,
        ClientType::AgentDesktop,
        ClientType::RoutingEngine,
        ClientType::ReportingEngine,
        ClientType::Proxy,
        ClientType::Operator,
    ];

    pub fn from_name(name: &str) -> Option<Self> {
        [
            ClientType::MediaServer,
            ClientType::AgentDesktop,
            ClientType::RoutingEngine,
            ClientType::ReportingEngine,
            ClientType::Proxy,
            ClientType::Operator,
        ]
        .into_iter()
        .find(|t| t.name() == name)
    }

    /// Whether this kind of client may create interactions.
    pub fn may_submit(self) -> bool {
        matches!(self, ClientType::MediaServer | ClientType::Proxy | ClientType::Operator)
    }
}

/// Error codes carried by EventError (attribute ERROR_CODE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The byte stream is not a frame (bad length); the connection closes.
    InvalidFrame = 1,
    /// The frame is longer than the limit; the connection closes.
    FrameTooLarge = 2,
    /// The header names a protocol version the server does not speak; closes.
    UnsupportedVersion = 3,
    /// The body of a frame does not parse.
    MalformedBody = 10,
    /// The message type is not known, or not a request.
    UnknownMessage = 11,
    /// A required attribute is absent.
    MissingAttribute = 12,
    /// An attribute has the wrong value type.
    WrongAttributeType = 13,
    /// An attribute has a value outside what is allowed.
    InvalidValue = 14,
    /// A request other than RequestRegisterClient came first.
    NotRegistered = 20,
    /// RequestRegisterClient on a connection already registered.
    AlreadyRegistered = 21,
    /// Unknown client name or wrong credential.
    AuthenticationFailed = 22,
    /// This client type may not make this request.
    NotPermitted = 23,
    UnknownTenant = 30,
    UnknownMediaType = 31,
    MediaTypeDisabled = 32,
    UnknownQueue = 33,
    UnknownInteraction = 34,
    DuplicateInteractionId = 35,
    InvalidInteractionId = 36,
    /// This node does not take submissions (`enable-submit = false`).
    SubmitDisabled = 37,
    /// Another client holds the interaction (a routing lock or a snapshot lock).
    InteractionLocked = 38,
    UnknownView = 39,
    UnknownWorkbin = 40,
    /// No such snapshot on this connection (never taken, released, or its
    /// connection closed).
    UnknownSnapshot = 41,
    /// A condition or order does not parse; the text says where.
    InvalidCondition = 42,
    UnknownAgent = 43,
    UnknownPlace = 44,
    /// The request needs a logged-in agent and there is none on this
    /// connection (or the named agent is not logged in).
    AgentNotLoggedIn = 45,
    /// The agent is already logged in elsewhere and
    /// `allow-multiple-agent-connections` is false.
    AgentAlreadyLoggedIn = 46,
    /// Every licensed agent seat of this node is taken.
    NoLicense = 47,
    /// The agent is not logged in on that media type.
    MediaNotLoggedIn = 48,
    /// The agent has no free capacity for the interaction's media type, is
    /// not ready, or is in do-not-disturb.
    AgentNotAvailable = 49,
    /// No such invitation (never sent, already answered, or revoked).
    UnknownInvitation = 53,
    /// The interaction is not in the state the request needs (not handled
    /// by this agent, already held, not held...).
    InvalidState = 54,
    /// The place is taken by another agent.
    PlaceTaken = 55,
    /// A subscription's EventCursor names events the server no longer
    /// keeps (an earlier run of the server, or older than it keeps).
    CursorExpired = 56,
    /// The change could not be committed to the database; it is not acknowledged.
    StorageFailure = 50,
    /// The server is shutting down and takes no new requests.
    ShuttingDown = 51,
    /// Too many requests in flight on this connection.
    Overloaded = 52,
    /// An invariant of the server failed; this is a bug, reported, not hidden.
    Internal = 99,
}

impl ErrorCode {
    pub fn code(self) -> i64 {
        self as i64
    }

    pub fn from_code(code: i64) -> Option<Self> {
        use ErrorCode::*;
        Some(match code {
            1 => InvalidFrame,
            2 => FrameTooLarge,
            3 => UnsupportedVersion,
            10 => MalformedBody,
            11 => UnknownMessage,
            12 => MissingAttribute,
            13 => WrongAttributeType,
            14 => InvalidValue,
            20 => NotRegistered,
            21 => AlreadyRegistered,
            22 => AuthenticationFailed,
            23 => NotPermitted,
            30 => UnknownTenant,
            31 => UnknownMediaType,
            32 => MediaTypeDisabled,
            33 => UnknownQueue,
            34 => UnknownInteraction,
            35 => DuplicateInteractionId,
            36 => InvalidInteractionId,
            37 => SubmitDisabled,
            38 => InteractionLocked,
            39 => UnknownView,
            40 => UnknownWorkbin,
            41 => UnknownSnapshot,
            42 => InvalidCondition,
            43 => UnknownAgent,
            44 => UnknownPlace,
            45 => AgentNotLoggedIn,
            46 => AgentAlreadyLoggedIn,
            47 => NoLicense,
            48 => MediaNotLoggedIn,
            49 => AgentNotAvailable,
            53 => UnknownInvitation,
            54 => InvalidState,
            55 => PlaceTaken,
            56 => CursorExpired,
            50 => StorageFailure,
            51 => ShuttingDown,
            52 => Overloaded,
            99 => Internal,
            _ => return None,
        })
    }
}
