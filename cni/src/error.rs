//! The plugin's errors: a spec error code and a message that names the
//! problem (the thing at fault and what is wrong with it).
//!
//! Codes below 100 are the spec's; 100 and up are this plugin's, listed in
//! `docs/cni.md`.

/// An error the runtime receives as `{"cniVersion","code","msg","details"}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct PluginError {
    /// The spec's code (1 to 99) or this plugin's (100 and up).
    pub code: u32,
    /// What went wrong, naming the thing at fault.
    pub msg: String,
    /// More context (may be empty).
    pub details: String,
}

/// Spec: incompatible CNI version.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// Spec: unknown container (CHECK of an attachment that does not exist).
pub const UNKNOWN_CONTAINER: u32 = 3;
/// Spec: invalid necessary environment variables.
pub const BAD_ENV: u32 = 4;
/// Spec: I/O failure.
pub const IO_FAILURE: u32 = 5;
/// Spec: invalid network config.
pub const INVALID_CONFIG: u32 = 7;
/// Spec: the network namespace cannot be used.
pub const INVALID_NETNS: u32 = 8;
/// Spec: try again later (sluiced unreachable, no subnet file yet).
pub const TRY_AGAIN_LATER: u32 = 11;
/// Spec (STATUS): cannot serve ADD.
pub const NOT_AVAILABLE: u32 = 50;
/// Spec (STATUS): cannot serve ADD, and existing pods may have limited
/// connectivity.
pub const NOT_AVAILABLE_LIMITED: u32 = 51;
/// No free address left in the node's subnet.
pub const ADDRESS_EXHAUSTED: u32 = 100;
/// sluiced refused the pod's port.
pub const PORT_REFUSED: u32 = 101;
/// CHECK found the attachment not as ADD left it.
pub const CHECK_FAILED: u32 = 102;
/// A netlink step (veth, address, route) failed.
pub const LINK_FAILED: u32 = 103;
/// The delegated IPAM plugin failed.
pub const IPAM_FAILED: u32 = 104;
/// vhost-user mode on Kubernetes: the pod has no emptyDir volume for its
/// sockets.
pub const NO_VHOST_VOLUME: u32 = 105;

impl PluginError {
    /// An error with `code`.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        PluginError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }
    /// Adds details.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
    /// Invalid network config (7).
    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(INVALID_CONFIG, msg)
    }
    /// I/O failure (5).
    pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> Self {
        Self::new(IO_FAILURE, format!("{what}: {e}"))
    }
}

impl From<PluginError> for rscni_plugin::error::Error {
    fn from(e: PluginError) -> Self {
        rscni_plugin::error::Error::Custom(e.code, e.msg, e.details)
    }
}

/// The plugin's results.
pub type Result<T> = std::result::Result<T, PluginError>;
