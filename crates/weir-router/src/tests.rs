//! Table tests of route precedence and matching.

use super::*;

fn table(yaml_routes: &str) -> RouteTable {
    let yaml = format!(
        "upstreams: {{ u: {{ targets: [ {{ address: \"127.0.0.1:1\" }} ] }} }}\nroutes:\n{yaml_routes}"
    );
    let cfg = weir_config::from_yaml(&yaml, "t").unwrap();
    let errs = weir_config::validate(&cfg);
    assert!(errs.is_empty(), "{errs:?}");
    RouteTable::compile(&cfg.routes).unwrap()
}

fn find(
    t: &RouteTable,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<usize> {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let m = Method::from_bytes(method.as_bytes()).unwrap();
    t.find(&RequestView {
        host,
        path,
        method: &m,
        headers: &h,
    })
    .map(|m| m.route)
}

/// host, method, path, headers, expected route index.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    Option<usize>,
);

#[test]
fn precedence_table() {
    let t = table(
        r#"
  - { name: r0-any-prefix, upstream: u, match: { paths: ["/*"] } }
  - { name: r1-api-prefix, upstream: u, match: { paths: ["/api/*"] } }
  - { name: r2-api-v1-prefix, upstream: u, match: { paths: ["/api/v1/*"] } }
  - { name: r3-api-exact, upstream: u, match: { paths: ["/api/v1/users"] } }
  - { name: r4-regex, upstream: u, match: { paths: ["~/api/v[0-9]+/items/[0-9]+"] } }
  - { name: r5-host-exact, upstream: u, match: { hosts: [api.example.com], paths: ["/*"] } }
  - { name: r6-host-wild, upstream: u, match: { hosts: ["*.example.com"], paths: ["/api/*"] } }
  - { name: r7-post-only, upstream: u, match: { paths: ["/api/*"], methods: [POST] } }
  - { name: r8-header, upstream: u, match: { paths: ["/api/*"], headers: { x-api-version: "2" } } }
  - { name: r9-priority, upstream: u, priority: 10, match: { paths: ["/urgent/*"] } }
  - { name: r10-low-exact, upstream: u, match: { paths: ["/urgent/x"] } }
"#,
    );
    let cases: &[Case<'_>] = &[
        ("", "GET", "/", &[], Some(0)),
        ("", "GET", "/other", &[], Some(0)),
        ("", "GET", "/api", &[], Some(1)),
        ("", "GET", "/api/", &[], Some(1)),
        ("", "GET", "/apple", &[], Some(0)), // prefixes match on segment boundaries only
        ("", "GET", "/api/v1/x", &[], Some(2)),
        ("", "GET", "/api/v1/users", &[], Some(3)), // exact beats longer prefix
        ("", "GET", "/api/v1/users/7", &[], Some(2)),
        ("", "GET", "/api/v2/items/9", &[], Some(1)), // prefix beats regex
        ("", "GET", "/api/v2/items/9x", &[], Some(1)),
        ("api.example.com", "GET", "/api/v1/users", &[], Some(5)), // exact host first
        ("x.example.com", "GET", "/api/v1/users", &[], Some(6)),   // then wildcard host
        ("a.b.example.com", "GET", "/api/z", &[], Some(1)),        // wildcard is one label
        ("example.com", "GET", "/api/z", &[], Some(1)),
        ("", "POST", "/api/z", &[], Some(7)), // more conditions win at equal path
        ("", "GET", "/api/z", &[("x-api-version", "2")], Some(8)),
        ("", "GET", "/api/z", &[("x-api-version", "3")], Some(1)),
        ("", "GET", "/urgent/x", &[], Some(9)), // priority beats exact
    ];
    for (host, method, path, headers, want) in cases {
        let got = find(&t, host, method, path, headers);
        let name = |i: Option<usize>| i.map(|i| format!("r{i}")).unwrap_or("none".into());
        assert_eq!(
            got,
            *want,
            "{method} {host}{path} {headers:?}: got {} want {}",
            name(got),
            name(*want)
        );
    }
}

#[test]
fn regex_routes_are_anchored() {
    let t = table(
        r#"
  - { name: re, upstream: u, match: { paths: ["~/users/[0-9]+"] } }
"#,
    );
    assert_eq!(find(&t, "", "GET", "/users/12", &[]), Some(0));
    assert_eq!(find(&t, "", "GET", "/users/12/x", &[]), None);
    assert_eq!(find(&t, "", "GET", "/x/users/12", &[]), None);
}

#[test]
fn no_route_without_catch_all() {
    let t = table("  - { name: a, upstream: u, match: { paths: [/a] } }\n");
    assert_eq!(find(&t, "", "GET", "/b", &[]), None);
    assert_eq!(find(&t, "", "GET", "/a/", &[]), None);
}

#[test]
fn prefix_match_reports_the_prefix_length() {
    let t = table("  - { name: a, upstream: u, match: { paths: [/orders/*] } }\n");
    let h = HeaderMap::new();
    let m = t
        .find(&RequestView {
            host: "",
            path: "/orders/42",
            method: &Method::GET,
            headers: &h,
        })
        .unwrap();
    assert_eq!(m.path, PathMatch::Prefix { len: 7 });
}

#[test]
fn canonical_hosts() {
    assert_eq!(
        canonical_host("API.Example.com:8080").as_deref(),
        Some("api.example.com")
    );
    assert_eq!(
        canonical_host("example.com.").as_deref(),
        Some("example.com")
    );
    assert_eq!(canonical_host("[::1]:80").as_deref(), Some("[::1]"));
    assert_eq!(canonical_host("a.com:99999"), None);
    assert_eq!(canonical_host("a.com:0"), None);
    assert_eq!(canonical_host("a b.com"), None);
    assert_eq!(canonical_host(""), None);
}

#[test]
fn ten_thousand_routes_resolve() {
    let mut routes = String::new();
    for i in 0..10_000 {
        routes.push_str(&format!(
            "  - {{ name: r{i}, upstream: u, match: {{ paths: [\"/svc{i}/*\"] }} }}\n"
        ));
    }
    let t = table(&routes);
    assert_eq!(find(&t, "", "GET", "/svc9999/x/y", &[]), Some(9999));
    assert_eq!(find(&t, "", "GET", "/svc10000/x", &[]), None);
}
