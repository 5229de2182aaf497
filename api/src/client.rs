//! A small blocking client: one connection per request, typed results.

use crate::error::ApiError;
use crate::request::{
    CaptureReadArgs, CaptureStartArgs, CaptureStopArgs, NeighboursRemoveArgs, NeighboursSetArgs,
    NodeSetArgs, PortsAddArgs, PortsRemoveArgs, Request, RoutesArgs, RoutesRemoveArgs, TraceArgs,
    UpgradeArgs,
};
use crate::response::{
    CaptureFrames, CaptureStarted, CaptureStopped, FlowList, Generation, NeighbourList, NodeInfo,
    PortList, PortsAdded, Reloaded, Removed, Response, ResultError, RouteList, RoutesChanged,
    Stats, Trace, Upgrading,
};
use crate::types::{
    Ipv4Net, NeighbourConfig, NodeSettings, PortConfig, RouteConfig, TunnelSettings,
};
use crate::{DEFAULT_SOCKET, VERSION};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a call has no result.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached, written or read (no daemon, no
    /// permission, timeout).
    #[error("{}: {source}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The daemon answered something that is not a response to the request
    /// (not JSON, another version, a result of the wrong shape).
    #[error("{}: bad response: {message}", path.display())]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The daemon refused the request.
    #[error(transparent)]
    Api(ApiError),
}

impl ClientError {
    /// The daemon's error, if it refused the request.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            ClientError::Api(e) => Some(e),
            _ => None,
        }
    }
}

/// How long a call waits for the daemon by default: `ports.add` waits for
/// every worker (up to 5 s, twice on a rollback) before it answers.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one daemon's API socket.
#[derive(Debug, Clone)]
pub struct Client {
    path: PathBuf,
    timeout: Duration,
}

impl Default for Client {
    /// A client of [`DEFAULT_SOCKET`].
    fn default() -> Self {
        Client::new(DEFAULT_SOCKET)
    }
}

impl Client {
    /// A client of the socket at `path`, with [`DEFAULT_TIMEOUT`].
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Client {
            path: path.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client with another timeout for writing the request and
    /// reading the response (zero is taken as one millisecond).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn protocol(&self, message: impl Into<String>) -> ClientError {
        ClientError::Protocol {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    /// Sends `request` and returns the response envelope as it came, ok or
    /// not; the envelope's version is checked.
    pub fn exchange(&self, request: &Request) -> Result<Response, ClientError> {
        let mut s = UnixStream::connect(&self.path).map_err(|e| self.io(e))?;
        s.set_read_timeout(Some(self.timeout))
            .map_err(|e| self.io(e))?;
        s.set_write_timeout(Some(self.timeout))
            .map_err(|e| self.io(e))?;
        let mut line = request.to_line();
        line.push('\n');
        s.write_all(line.as_bytes()).map_err(|e| self.io(e))?;
        let mut answer = String::new();
        BufReader::new(s)
            .read_line(&mut answer)
            .map_err(|e| self.io(e))?;
        if answer.is_empty() {
            return Err(self.protocol("the daemon closed the connection without answering"));
        }
        let resp = Response::from_line(&answer).map_err(|e| self.protocol(e.to_string()))?;
        if resp.version != VERSION {
            return Err(self.protocol(format!(
                "version {} (this client speaks {VERSION})",
                resp.version
            )));
        }
        Ok(resp)
    }

    /// Sends `request`; its result as JSON (for `--json` output).
    pub fn call(&self, request: &Request) -> Result<Value, ClientError> {
        self.typed(request)
    }

    /// Sends `request`; its result as `T`.
    pub fn typed<T: DeserializeOwned>(&self, request: &Request) -> Result<T, ClientError> {
        self.exchange(request)?.into_result().map_err(|e| match e {
            ResultError::Api(e) => ClientError::Api(e),
            ResultError::Malformed(m) => self.protocol(format!("{}: {m}", request.op())),
        })
    }

    /// `ports.list`.
    pub fn ports(&self) -> Result<PortList, ClientError> {
        self.typed(&Request::PortsList)
    }

    /// `ports.add`: attaches pod ports (see [`PortConfig::pod`]).
    pub fn add_ports(&self, ports: impl Into<Vec<PortConfig>>) -> Result<PortsAdded, ClientError> {
        self.typed(&Request::PortsAdd(PortsAddArgs {
            ports: ports.into(),
        }))
    }

    /// `ports.remove`: detaches pod ports by name.
    pub fn remove_ports(&self, names: impl Into<Vec<String>>) -> Result<Removed, ClientError> {
        self.typed(&Request::PortsRemove(PortsRemoveArgs {
            names: names.into(),
        }))
    }

    /// `routes.list`.
    pub fn routes(&self) -> Result<RouteList, ClientError> {
        self.typed(&Request::RoutesList)
    }

    /// `routes.add`: adds routes, or replaces them by prefix.
    pub fn add_routes(
        &self,
        routes: impl Into<Vec<RouteConfig>>,
    ) -> Result<RoutesChanged, ClientError> {
        self.typed(&Request::RoutesAdd(RoutesArgs {
            routes: routes.into(),
        }))
    }

    /// `routes.replace`: the configured routes become exactly `routes`.
    pub fn replace_routes(
        &self,
        routes: impl Into<Vec<RouteConfig>>,
    ) -> Result<RoutesChanged, ClientError> {
        self.typed(&Request::RoutesReplace(RoutesArgs {
            routes: routes.into(),
        }))
    }

    /// `routes.remove`: removes routes by prefix.
    pub fn remove_routes(&self, prefixes: impl Into<Vec<Ipv4Net>>) -> Result<Removed, ClientError> {
        self.typed(&Request::RoutesRemove(RoutesRemoveArgs {
            prefixes: prefixes.into(),
        }))
    }

    /// `neighbours.list`.
    pub fn neighbours(&self) -> Result<NeighbourList, ClientError> {
        self.typed(&Request::NeighboursList)
    }

    /// `neighbours.set`: adds or updates neighbours by address.
    pub fn set_neighbours(
        &self,
        neighbours: impl Into<Vec<NeighbourConfig>>,
    ) -> Result<Generation, ClientError> {
        self.typed(&Request::NeighboursSet(NeighboursSetArgs {
            neighbours: neighbours.into(),
        }))
    }

    /// `neighbours.remove`: removes neighbours by address.
    pub fn remove_neighbours(&self, ips: impl Into<Vec<Ipv4Addr>>) -> Result<Removed, ClientError> {
        self.typed(&Request::NeighboursRemove(NeighboursRemoveArgs {
            ips: ips.into(),
        }))
    }

    /// `node.get`.
    pub fn node(&self) -> Result<NodeInfo, ClientError> {
        self.typed(&Request::NodeGet)
    }

    /// `node.set`: replaces the node settings, the tunnel settings, or both.
    pub fn set_node(
        &self,
        node: Option<NodeSettings>,
        tunnel: Option<TunnelSettings>,
    ) -> Result<Generation, ClientError> {
        self.typed(&Request::NodeSet(NodeSetArgs { node, tunnel }))
    }

    /// `stats`.
    pub fn stats(&self) -> Result<Stats, ClientError> {
        self.typed(&Request::Stats)
    }

    /// `flows`.
    pub fn flows(&self) -> Result<FlowList, ClientError> {
        self.typed(&Request::Flows)
    }

    /// `trace`: what the switch would do with `frame` received on `port`.
    pub fn trace(&self, port: &str, frame: &[u8]) -> Result<Trace, ClientError> {
        self.typed(&Request::Trace(TraceArgs::new(port, frame)))
    }

    /// `reload`: re-reads the configuration file.
    pub fn reload(&self) -> Result<Reloaded, ClientError> {
        self.typed(&Request::Reload)
    }

    /// `capture.start`: starts copying a port's frames.
    pub fn capture_start(&self, args: CaptureStartArgs) -> Result<CaptureStarted, ClientError> {
        self.typed(&Request::CaptureStart(args))
    }

    /// `capture.read`: up to `max` frames captured since the last read.
    pub fn capture_read(&self, id: u64, max: Option<usize>) -> Result<CaptureFrames, ClientError> {
        self.typed(&Request::CaptureRead(CaptureReadArgs { id, max }))
    }

    /// `capture.stop`: ends a capture.
    pub fn capture_stop(&self, id: u64) -> Result<CaptureStopped, ClientError> {
        self.typed(&Request::CaptureStop(CaptureStopArgs { id }))
    }

    /// `upgrade`: starts `binary` (the running one's own when `None`) to
    /// take this sluiced's ports over.
    pub fn upgrade(&self, binary: Option<String>) -> Result<Upgrading, ClientError> {
        self.typed(&Request::Upgrade(UpgradeArgs { binary }))
    }
}
