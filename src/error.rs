//! Errors inside libvram. The C boundary maps each [`ErrorKind`] to a `vram_status` code.

use thiserror::Error;

/// The class of a failure; one per public status code (other than success and panic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NullArgument,
    InvalidArgument,
    OutOfMemory,
    NoDevice,
    Device,
    Integrity,
    BadSeal,
    Policy,
    Unsupported,
    BufferTooSmall,
    Cancelled,
}

/// A libvram error: its class plus a message that names the argument and the reason.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{message}")]
pub struct VramError {
    pub kind: ErrorKind,
    pub message: String,
}

impl VramError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn null(arg: &str) -> Self {
        Self::new(ErrorKind::NullArgument, format!("{arg}: must not be NULL"))
    }

    pub fn invalid(arg: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::InvalidArgument, format!("{arg}: {reason}"))
    }

    pub fn bad_seal(reason: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::BadSeal, format!("record: {reason}"))
    }

    pub fn out_of_memory(reason: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::OutOfMemory, reason.to_string())
    }
}

pub type Result<T> = std::result::Result<T, VramError>;
