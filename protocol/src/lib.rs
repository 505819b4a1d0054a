//! Rookery's wire types: what clients send ([`ClientFrame`]), what the node sends back
//! ([`ServerEvent`]), the objects both share ([`Message`], [`Conversation`], ...) and the error
//! and close codes of the contract.
//!
//! This crate does no I/O. The node, the load generator and the tests all use it, so a change
//! here is a change of the public protocol: document it in `docs/protocol.md`.
//!
//! Feature `openapi` (off by default): the objects and [`ErrorCode`] derive `utoipa::ToSchema`,
//! for the node's OpenAPI document of its HTTP API.

mod codes;
mod events;
mod frames;
mod objects;

pub use codes::{close, ErrorCode};
pub use events::{encode_event, encode_message, message_seq, msg_event, Limits, ServerEvent};
pub use frames::{decode_client_frame, echo_by_default, ClientFrame, DecodeError, KNOWN_OPS};
pub use objects::{is_valid_id, ConvId, Conversation, ConversationKind, Member, Message, Role, Session, User, UserId};
