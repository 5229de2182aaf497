//! The error a daemon answers a refused request with.

use serde::{Deserialize, Serialize};

/// What went wrong with a request: the request field at fault, when there
/// is one, and what is wrong. On the wire:
/// `{"field":"routes[0].vtep_mac","message":"via vxlan needs the remote VTEP MAC"}`
/// (`field` is left out when there is none).
///
/// Displayed as `field: message`, or `message` alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}{message}", field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct ApiError {
    /// The request field at fault, e.g. `routes[2].node`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ApiError {
    /// An error about `field` (when `Some`).
    pub fn new(field: Option<String>, message: impl Into<String>) -> Self {
        ApiError {
            field,
            message: message.into(),
        }
    }

    /// An error about the request field `field`.
    pub fn at(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Some(field.into()), message)
    }

    /// An error about no field in particular.
    pub fn general(message: impl Into<String>) -> Self {
        Self::new(None, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_wire() {
        let e = ApiError::at("routes[1].vtep_mac", "via vxlan needs the remote VTEP MAC");
        assert_eq!(
            e.to_string(),
            "routes[1].vtep_mac: via vxlan needs the remote VTEP MAC"
        );
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"field":"routes[1].vtep_mac","message":"via vxlan needs the remote VTEP MAC"}"#
        );
        let g = ApiError::general("this switch has no workers to ask");
        assert_eq!(g.to_string(), "this switch has no workers to ask");
        assert_eq!(
            serde_json::to_string(&g).unwrap(),
            r#"{"message":"this switch has no workers to ask"}"#
        );
        let back: ApiError = serde_json::from_str(r#"{"message":"x"}"#).unwrap();
        assert_eq!(back, ApiError::general("x"));
    }
}
