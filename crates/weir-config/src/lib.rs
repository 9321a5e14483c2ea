//! Weir's configuration: the typed serde model (raw), loading from YAML with `WEIR_*`
//! overrides, and whole-config validation that reports every error with its path.
//! Compilation into runtime objects happens in the crates that own them.

pub mod ai;
mod diagnose;
mod load;
mod model;
pub mod net;
mod policy;
mod restart;
mod schema;
mod secret;
mod units;
mod validate;
mod validate_ai;
mod validate_policy;

pub use diagnose::with_lines;
pub use load::{LoadError, apply_env, from_yaml, load_file};
pub use model::*;
pub use policy::*;
pub use restart::hold_restart_only;
pub use secret::{REDACTED, Secret, SecretUrl, Source as SecretSource, redacting};
pub use units::{ByteSize, Duration, Share, Start, parse_rfc3339, rfc3339};
pub use validate::{
    REGEX_SIZE_LIMIT, ValidationError, compile_route_regex, did_you_mean, parse_cidr,
    parse_host_port, validate,
};

/// The quick-start configuration used when no file is given and `./weir.yaml` is absent:
/// one route to the built-in echo target, so a newcomer can `curl` at once.
pub const QUICKSTART_YAML: &str = include_str!("quickstart.yaml");
