//! WebSocket upgrades: the request keeps its `Upgrade`, and only when the upstream answers
//! `101` with a matching `Upgrade` are the two connections joined into a byte tunnel.

use std::sync::Arc;

use http::HeaderMap;
use http::header::{CONNECTION, UPGRADE};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

pub fn is_upgrade_request(h: &HeaderMap) -> bool {
    h.contains_key(UPGRADE)
        && h.get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

pub fn is_websocket(h: &HeaderMap) -> bool {
    h.get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// Whether an upstream's 101 agrees with the WebSocket upgrade that was asked for.
pub fn accepts(rsp: &HeaderMap) -> bool {
    is_websocket(rsp)
}

/// Joins client and upstream once both sides finish switching protocols.
pub fn spawn_tunnel(client: OnUpgrade, upstream: OnUpgrade, route: Arc<str>) {
    tokio::spawn(async move {
        let (c, u) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(route = %route, error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut c = TokioIo::new(c);
        let mut u = TokioIo::new(u);
        match tokio::io::copy_bidirectional(&mut c, &mut u).await {
            Ok((to_up, to_client)) => {
                tracing::debug!(route = %route, to_up, to_client, "tunnel closed")
            }
            Err(e) => tracing::debug!(route = %route, error = %e, "tunnel ended with an error"),
        }
    });
}
