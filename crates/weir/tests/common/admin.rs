//! Helpers for the admin API tests: a node with its admin listener, logins, and a small
//! client that sends the token.
#![allow(dead_code)]

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use weir_testkit::HttpClient;
use weir_testkit::client::Reply;

pub const PASSWORD: &str = "correct-horse-battery";

pub struct Api {
    pub base: String,
    pub token: String,
    pub cl: HttpClient,
}

impl Api {
    pub async fn call(&self, method: Method, path: &str) -> Reply {
        self.call_with(method, path, None, &[]).await
    }

    pub async fn send(&self, method: Method, path: &str, body: Value) -> Reply {
        self.call_with(method, path, Some(body), &[]).await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        extra: &[(&str, &str)],
    ) -> Reply {
        let auth = format!("Bearer {}", self.token);
        let mut headers: Vec<(&str, &str)> = vec![("authorization", auth.as_str())];
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        headers.extend_from_slice(extra);
        let body = body.map_or(Bytes::new(), |b| Bytes::from(b.to_string()));
        self.cl
            .request(method, &format!("{}{path}", self.base), &headers, body)
            .await
    }
}

pub async fn login(base: &str, user: &str, password: &str) -> Reply {
    HttpClient::new()
        .request(
            Method::POST,
            &format!("{base}/api/v1/login"),
            &[("content-type", "application/json")],
            Bytes::from(json!({ "username": user, "password": password }).to_string()),
        )
        .await
}

pub async fn api_as(base: &str, user: &str, password: &str) -> Api {
    let r = login(base, user, password).await;
    assert_eq!(r.status, 200, "{}", r.text());
    Api {
        base: base.to_owned(),
        token: r.json()["token"].as_str().unwrap().to_owned(),
        cl: HttpClient::new(),
    }
}

/// A node with an admin listener; `extra` is appended to the YAML.
pub async fn node(extra: &str, admin: weir::FirstAdmin) -> (weir::Node, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let yaml = format!(
        "listen:\n  proxy: 127.0.0.1:0\n  admin: 127.0.0.1:0\nworkers: 1\naccess_log: off\n{extra}"
    );
    let cfg = weir_config::from_yaml(&yaml, "test").expect("test config parses");
    let node = weir::start(cfg, Default::default(), admin, true)
        .await
        .expect("node starts");
    let base = format!("http://{}", node.running.admin_addr.unwrap());
    (node, base)
}

pub fn first_admin() -> weir::FirstAdmin {
    weir::FirstAdmin {
        user: None,
        password: Some(PASSWORD.to_owned()),
    }
}

pub fn sqlite_store(dir: &std::path::Path) -> String {
    format!("store: sqlite://weir.db\ndata_dir: {}\n", dir.display())
}
