//! Route lookup over 10,000 routes: exact hosts, wildcard hosts, prefixes, exact paths and
//! a few regexes, the shape of a large multi-tenant configuration.

// A benchmark: a bad fixture should stop it loudly.
#![allow(clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use std::hint::black_box;
use weir_router::{RequestView, RouteTable};

fn build() -> RouteTable {
    let mut yaml =
        String::from("upstreams: { u: { targets: [ { address: \"127.0.0.1:1\" } ] } }\nroutes:\n");
    for i in 0..10_000 {
        let line = match i % 4 {
            0 => {
                format!("  - {{ name: r{i}, upstream: u, match: {{ paths: [\"/svc{i}/*\"] }} }}\n")
            }
            1 => format!(
                "  - {{ name: r{i}, upstream: u, match: {{ paths: [\"/svc{i}/items\"], methods: [GET] }} }}\n"
            ),
            2 => format!(
                "  - {{ name: r{i}, upstream: u, match: {{ hosts: [\"t{i}.example.com\"], paths: [\"/api/*\"] }} }}\n"
            ),
            _ => format!(
                "  - {{ name: r{i}, upstream: u, match: {{ hosts: [\"*.t{i}.example.org\"], paths: [\"/v1/*\"] }} }}\n"
            ),
        };
        yaml.push_str(&line);
    }
    for i in 0..10 {
        yaml.push_str(&format!(
            "  - {{ name: re{i}, upstream: u, match: {{ paths: [\"~/re{i}/[0-9]+\"] }} }}\n"
        ));
    }
    let cfg = weir_config::from_yaml(&yaml, "bench").expect("bench config parses");
    RouteTable::compile(&cfg.routes).expect("bench routes compile")
}

fn bench(c: &mut Criterion) {
    let t = build();
    let h = HeaderMap::new();
    let cases = [
        ("prefix", "", "/svc4000/orders/42"),
        ("exact", "", "/svc4001/items"),
        ("exact_host", "t4002.example.com", "/api/users/1"),
        ("wildcard_host", "a.t4003.example.org", "/v1/x"),
        ("regex", "", "/re7/123"),
        ("miss", "nothing.example.net", "/none/at/all"),
    ];
    for (name, host, path) in cases {
        c.bench_function(&format!("lookup_10k/{name}"), |b| {
            b.iter(|| {
                black_box(t.find(&RequestView {
                    host: black_box(host),
                    path: black_box(path),
                    method: &Method::GET,
                    headers: &h,
                }))
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
