//! Topic configuration shared by the event tests: a topic with a small size limit, an
//! open topic route and one behind key auth.

pub const KEY: &str = "publisher-key-0123456789";

pub fn yaml(dir: &std::path::Path, proxy: &str) -> String {
    format!(
        "listen: {{ proxy: \"{proxy}\" }}
workers: 1
access_log: off
data_dir: {}
consumers: [ {{ name: publisher, credentials: [ {{ type: key, key: \"{KEY}\" }} ] }} ]
topics:
  orders: {{ max_event_size: 1KiB }}
routes:
  - {{ name: order-input, topic: orders, match: {{ paths: [/events/orders] }} }}
  - {{ name: keyed-input, topic: orders, match: {{ paths: [/events/keyed] }}, policies: [ {{ key_auth: {{}} }} ] }}
",
        dir.display()
    )
}
