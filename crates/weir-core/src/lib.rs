//! Weir's shared vocabulary: error kinds, request ids and the one path normalizer that every
//! plane uses, so routing, policies and forwarding all see the same request.

pub mod error;
pub mod id;
pub mod json;
pub mod overload;
pub mod path;
pub mod time;

pub use error::{GatewayError, UpstreamFailure};
pub use id::RequestId;
pub use path::{EncodedSlash, NormalizeError, PathOptions, normalize_path};
