//! How the state machine's answers become gRPC statuses (the table in
//! `common.proto`): one place, so every service says the same thing.

use farmlog_engine::state::outcome::Rejection;
use tonic::metadata::MetadataValue;
use tonic::Status;

/// On FAILED_PRECONDITION for a stream's expected version: the stream's
/// current version (absent when the stream does not exist).
pub const CURRENT_VERSION_HEADER: &str = "farmlog-current-version";

/// The status of a command apply refused (it stays in the log with no
/// effect).
pub fn rejection(rejection: &Rejection) -> Status {
    let message = rejection.to_string();
    match rejection {
        Rejection::TenantUnknown | Rejection::NotFound { .. } => Status::not_found(message),
        Rejection::AlreadyExists { .. } | Rejection::AlreadyMember => Status::already_exists(message),
        Rejection::WrongExpectedVersion { current } => {
            let mut status = Status::failed_precondition(message);
            if let Some(current) = current {
                status
                    .metadata_mut()
                    .insert(CURRENT_VERSION_HEADER, MetadataValue::from(*current));
            }
            status
        }
        Rejection::TooManyDestinations { .. } => Status::invalid_argument(format!("destinations: {message}")),
        Rejection::WrongKind { .. }
        | Rejection::ParentNotAllowed { .. }
        | Rejection::NotReachable
        | Rejection::HasChildren
        | Rejection::NotMember
        | Rejection::MessageIdInUse
        | Rejection::SourceKindMismatch { .. }
        | Rejection::SessionUnknown
        | Rejection::SequenceTooOld { .. }
        | Rejection::NoBackChannel { .. }
        | Rejection::GroupNotDestination
        | Rejection::TransferPhase { .. } => Status::failed_precondition(message),
    }
}

/// INVALID_ARGUMENT naming the field.
pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("invalid field `{field}`: {reason}"))
}

/// A required field the request left out.
pub fn missing(field: &str) -> Status {
    invalid(field, "required")
}
