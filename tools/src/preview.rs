//! A bounded preview of bytes, as the inspectors show them: the first few
//! bytes as text when they are printable UTF-8, as hex otherwise, and
//! whether anything was cut off.
//!
//! Invariant: a preview holds at most the number of bytes it was asked
//! for, whatever the input's length, so output stays bounded.

use serde_json::{json, Value};

/// The first bytes of a byte string, as text or hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    pub shown: Shown,
    /// Bytes past the preview were left out.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    Text(String),
    Hex(String),
}

impl Preview {
    /// The first `bytes_max` bytes of `bytes`.
    pub fn of(bytes: &[u8], bytes_max: usize) -> Self {
        let shown = &bytes[..bytes.len().min(bytes_max)];
        let truncated = shown.len() < bytes.len();
        let text = match std::str::from_utf8(shown) {
            Ok(text) => Some(text),
            // A multi-byte character cut by the truncation still counts.
            Err(error) if truncated && error.error_len().is_none() => {
                std::str::from_utf8(&shown[..error.valid_up_to()]).ok()
            }
            Err(_) => None,
        };
        let shown = match text.filter(|text| !text.chars().any(char::is_control)) {
            Some(text) => Shown::Text(text.to_owned()),
            None => Shown::Hex(hex(shown)),
        };
        Self { shown, truncated }
    }

    /// `{"text": …, "truncated": …}` or `{"hex": …, "truncated": …}`.
    pub fn to_json(&self) -> Value {
        match &self.shown {
            Shown::Text(text) => json!({ "text": text, "truncated": self.truncated }),
            Shown::Hex(hex) => json!({ "hex": hex, "truncated": self.truncated }),
        }
    }

    /// `text="…"` or `hex=…`, with `...` after a truncated one.
    pub fn to_text(&self) -> String {
        let ellipsis = if self.truncated { "..." } else { "" };
        match &self.shown {
            Shown::Text(text) => format!("text={text:?}{ellipsis}"),
            Shown::Hex(hex) => format!("hex={hex}{ellipsis}"),
        }
    }
}

/// Lowercase hex, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
