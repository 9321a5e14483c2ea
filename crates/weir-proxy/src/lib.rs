//! Weir's data plane: listeners and workers, TLS termination, the request pipeline, the
//! compiled snapshot and its reload path. Errors become responses in `error_response` only.

pub mod admin;
mod ai;
pub mod app;
mod body;
mod builtin;
mod error_response;
mod finish;
pub mod gateway;
mod headers;
pub mod ingest;
pub mod overload;
pub mod pipeline;
pub mod reload;
mod respond;
pub mod server;
pub mod snapshot;
mod stream;
pub mod tls;
mod upgrade;

pub use body::ProxyBody;
pub use gateway::Gateway;
pub use server::{Listeners, Workers, bind};
