//! Network configuration lists (`.conflist`), parsed as libcni's
//! `NetworkConfFromBytes` does, with the field checks the spec asks for.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The highest spec version this library implements (libcni's
/// `version.Current()`).
pub const CURRENT_VERSION: &str = "1.1.0";

/// A spec version, `MAJOR[.MINOR[.MICRO]]`, compared numerically (libcni's
/// `version.ParseVersion`: missing parts are 0, more than three is an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// 0.4.0: CHECK, and `prevResult` on DEL.
    pub const V0_4_0: Version = Version(0, 4, 0);
    /// 1.1.0: GC and STATUS.
    pub const V1_1_0: Version = Version(1, 1, 0);
    /// [`CURRENT_VERSION`].
    pub const CURRENT: Version = Version::V1_1_0;

    /// Parses `1`, `1.0` or `1.0.0`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = [0u32; 3];
        for (n, part) in s.split('.').enumerate() {
            if n == 3 || part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            parts[n] = part.parse().ok()?;
        }
        Some(Version(parts[0], parts[1], parts[2]))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Why a conflist was refused. [`ConfError::Field`] names the offending
/// field as a path (`plugins[1].capabilities.portMappings`).
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    /// The file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not JSON, or not a JSON object.
    #[error("conflist is not a JSON object: {0}")]
    Json(String),
    /// A field is missing, of the wrong type or has a value the spec forbids.
    #[error("conflist field `{field}`: {reason}")]
    Field {
        /// Path of the field, e.g. `name` or `plugins[0].type`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfError {
    /// The field a [`ConfError::Field`] names.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfError::Field { field, .. } => Some(field),
            _ => None,
        }
    }

    fn field_err(field: impl Into<String>, reason: impl Into<String>) -> ConfError {
        ConfError::Field {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// One entry of `plugins`: its `type`, its `capabilities`, and the whole
/// object as written (passed on to the plugin with the runtime's additions).
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConf {
    /// `type`: the plugin binary's file name.
    pub plugin_type: String,
    /// `capabilities`: capability name → enabled.
    pub capabilities: BTreeMap<String, bool>,
    /// The object as written in the conflist.
    pub raw: Map<String, Value>,
}

impl PluginConf {
    /// The capabilities this plugin declares enabled.
    pub fn enabled_capabilities(&self) -> impl Iterator<Item = &str> {
        self.capabilities
            .iter()
            .filter(|(_, on)| **on)
            .map(|(k, _)| k.as_str())
    }
}

/// A network configuration list.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfList {
    /// `name`, valid per the spec (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`).
    pub name: String,
    /// The version the runtime uses: `cniVersion`, or the highest of
    /// `cniVersions` (and `cniVersion`) that is at most [`CURRENT_VERSION`].
    pub cni_version: String,
    /// `disableCheck`: CHECK is then a no-op.
    pub disable_check: bool,
    /// `disableGC`: GC is then a no-op.
    pub disable_gc: bool,
    /// `plugins`, in order; never empty.
    pub plugins: Vec<PluginConf>,
    /// The bytes it was parsed from (cached with each ADD result).
    pub bytes: Vec<u8>,
}

/// The spec's rule for network names and container IDs (libcni's
/// `cniValidNameChars`).
pub(crate) fn valid_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl ConfList {
    /// Reads and parses a conflist file.
    pub fn load(path: impl AsRef<Path>) -> Result<ConfList, ConfError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| ConfError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ConfList::parse(&bytes)
    }

    /// Parses a conflist.
    pub fn parse(bytes: &[u8]) -> Result<ConfList, ConfError> {
        let root: Value =
            serde_json::from_slice(bytes).map_err(|e| ConfError::Json(e.to_string()))?;
        let Value::Object(root) = root else {
            return Err(ConfError::Json(format!("found {}", type_name(&root))));
        };

        let name = match root.get("name") {
            None => return Err(ConfError::field_err("name", "missing")),
            Some(Value::String(s)) => s.clone(),
            Some(v) => {
                return Err(ConfError::field_err(
                    "name",
                    format!("must be a string, found {}", type_name(v)),
                ))
            }
        };
        if !valid_name(&name) {
            return Err(ConfError::field_err(
                "name",
                format!(
                    "{name:?} must start with a letter or digit, followed by letters, digits, `_`, `.` or `-`"
                ),
            ));
        }

        let cni_version = Self::pick_version(&root)?;

        let disable_check = read_bool(&root, "disableCheck")?;
        let disable_gc = read_bool(&root, "disableGC")?;

        let plugins = match root.get("plugins") {
            None => return Err(ConfError::field_err("plugins", "missing")),
            Some(Value::Array(a)) if a.is_empty() => {
                return Err(ConfError::field_err("plugins", "empty"))
            }
            Some(Value::Array(a)) => a,
            Some(v) => {
                return Err(ConfError::field_err(
                    "plugins",
                    format!("must be an array, found {}", type_name(v)),
                ))
            }
        };
        let plugins = plugins
            .iter()
            .enumerate()
            .map(|(i, p)| parse_plugin(i, p))
            .collect::<Result<Vec<_>, _>>()?;

        Ok(ConfList {
            name,
            cni_version,
            disable_check,
            disable_gc,
            plugins,
            bytes: bytes.to_vec(),
        })
    }

    /// `cniVersion`, or with `cniVersions` the highest version among both
    /// that this library supports (the spec's "version selection").
    fn pick_version(root: &Map<String, Value>) -> Result<String, ConfError> {
        let cni_version = match root.get("cniVersion") {
            None => None,
            Some(Value::String(s)) => {
                if Version::parse(s).is_none() {
                    return Err(ConfError::field_err(
                        "cniVersion",
                        format!("{s:?} is not a version"),
                    ));
                }
                Some(s.clone())
            }
            Some(v) => {
                return Err(ConfError::field_err(
                    "cniVersion",
                    format!("must be a string, found {}", type_name(v)),
                ))
            }
        };
        let Some(versions) = root.get("cniVersions") else {
            return cni_version.ok_or_else(|| ConfError::field_err("cniVersion", "missing"));
        };
        let Value::Array(versions) = versions else {
            return Err(ConfError::field_err(
                "cniVersions",
                format!("must be an array, found {}", type_name(versions)),
            ));
        };
        let mut best: Option<(Version, String)> = None;
        let mut consider = |s: &str, v: Version| {
            if v <= Version::CURRENT && best.as_ref().is_none_or(|(b, _)| v > *b) {
                best = Some((v, s.to_string()));
            }
        };
        for (i, v) in versions.iter().enumerate() {
            let field = format!("cniVersions[{i}]");
            let Value::String(s) = v else {
                return Err(ConfError::field_err(
                    field,
                    format!("must be a string, found {}", type_name(v)),
                ));
            };
            let parsed = Version::parse(s)
                .ok_or_else(|| ConfError::field_err(field, format!("{s:?} is not a version")))?;
            consider(s, parsed);
        }
        if let Some(s) = &cni_version {
            consider(s, Version::parse(s).expect("checked above"));
        }
        match (best, cni_version) {
            (Some((_, s)), _) => Ok(s),
            // Nothing this library supports: libcni keeps `cniVersion` as
            // written (the plugins will refuse it).
            (None, Some(s)) => Ok(s),
            (None, None) => Err(ConfError::field_err(
                "cniVersions",
                format!("no version at most {CURRENT_VERSION}, and no cniVersion"),
            )),
        }
    }

    /// The selected version, parsed (always valid: [`ConfList::parse`]
    /// checked it).
    pub fn version(&self) -> Version {
        Version::parse(&self.cni_version).unwrap_or(Version(0, 1, 0))
    }
}

/// A boolean field; libcni also takes the strings "true"/"false" in any case.
fn read_bool(root: &Map<String, Value>, key: &str) -> Result<bool, ConfError> {
    match root.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(ConfError::field_err(
                key,
                format!("{s:?} is neither true nor false"),
            )),
        },
        Some(v) => Err(ConfError::field_err(
            key,
            format!("must be a boolean, found {}", type_name(v)),
        )),
    }
}

fn parse_plugin(i: usize, p: &Value) -> Result<PluginConf, ConfError> {
    let Value::Object(raw) = p else {
        return Err(ConfError::field_err(
            format!("plugins[{i}]"),
            format!("must be an object, found {}", type_name(p)),
        ));
    };
    let plugin_type = match raw.get("type") {
        None => {
            return Err(ConfError::field_err(
                format!("plugins[{i}].type"),
                "missing",
            ))
        }
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            return Err(ConfError::field_err(
                format!("plugins[{i}].type"),
                format!("must be a string, found {}", type_name(v)),
            ))
        }
    };
    if plugin_type.is_empty()
        || plugin_type == "."
        || plugin_type == ".."
        || plugin_type.contains('/')
    {
        return Err(ConfError::field_err(
            format!("plugins[{i}].type"),
            format!("{plugin_type:?} is not a file name"),
        ));
    }
    let mut capabilities = BTreeMap::new();
    match raw.get("capabilities") {
        None => {}
        Some(Value::Object(caps)) => {
            for (k, v) in caps {
                let Value::Bool(on) = v else {
                    return Err(ConfError::field_err(
                        format!("plugins[{i}].capabilities.{k}"),
                        format!("must be a boolean, found {}", type_name(v)),
                    ));
                };
                capabilities.insert(k.clone(), *on);
            }
        }
        Some(v) => {
            return Err(ConfError::field_err(
                format!("plugins[{i}].capabilities"),
                format!("must be an object, found {}", type_name(v)),
            ))
        }
    }
    Ok(PluginConf {
        plugin_type,
        capabilities,
        raw: raw.clone(),
    })
}
