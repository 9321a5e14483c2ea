//! AI tests' helpers: POSTing JSON with headers, and reading an OpenAI stream's chunks
//! and the text they carry.

use serde_json::Value;

/// The chunks of an OpenAI SSE stream, checking it ends with `[DONE]`; and their text.
pub fn openai_stream(text: &str) -> (Vec<Value>, String) {
    let datas: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(datas.last().copied(), Some("[DONE]"), "{text}");
    let chunks: Vec<Value> = datas[..datas.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let said = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    (chunks, said)
}

/// POSTs `body` as JSON to `path` of `r` with `headers`.
pub async fn post_json(
    r: &weir_proxy::app::Running,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> weir_testkit::Reply {
    post_json_to(r.proxy_addr, path, headers, body).await
}

/// POSTs `body` as it is (JSON or not) with a JSON content type.
pub async fn post_raw(r: &weir_proxy::app::Running, path: &str, body: &str) -> weir_testkit::Reply {
    weir_testkit::HttpClient::new()
        .request(
            http::Method::POST,
            &format!("http://{}{path}", r.proxy_addr),
            &[("content-type", "application/json")],
            bytes::Bytes::from(body.to_owned()),
        )
        .await
}

/// POSTs `body` as JSON to `path` at `addr` with `headers`.
pub async fn post_json_to(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> weir_testkit::Reply {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    weir_testkit::HttpClient::new()
        .request(
            http::Method::POST,
            &format!("http://{addr}{path}"),
            &h,
            bytes::Bytes::from(body.to_string()),
        )
        .await
}

/// The model ids of a `GET /v1/models` answer.
pub fn model_ids(r: &weir_testkit::Reply) -> Vec<String> {
    r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}
