//! The OpenAPI document: it names every operation the router serves and no other, it is well
//! formed enough for a generator to use, and the real server serves it with its issuer.

use std::collections::BTreeSet;

use super::*;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    serde_json::from_str(tessera_server::openapi::DOCUMENT).expect("openapi.json is JSON")
}

/// Every operation in `doc`: its method, its path and its object.
fn operations(doc: &Value) -> impl Iterator<Item = (&str, &str, &Value)> {
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .iter()
                .filter(|(method, _)| METHODS.contains(&method.as_str()))
                .map(move |(method, op)| (method.as_str(), path.as_str(), op))
        })
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    operations(doc)
        .map(|(method, path, _)| (method.to_owned(), path.to_owned()))
        .collect()
}

#[test]
fn the_document_names_every_route_and_only_those() {
    let table = tessera_server::operations::<MemoryStore>();
    let served: BTreeSet<(String, String)> = table
        .iter()
        .map(|&(m, p)| (m.to_owned(), p.to_owned()))
        .collect();
    let doc = documented(&document());
    let undocumented: Vec<_> = served.difference(&doc).collect();
    let unserved: Vec<_> = doc.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "served but not documented: {undocumented:?}; documented but not served: {unserved:?}"
    );
    // The table has no line twice (axum would merge them silently).
    assert_eq!(served.len(), table.len());
}

/// Every `$ref` in `v`, as the JSON pointer it names.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[test]
fn the_document_is_whole() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(
        doc.get("servers").is_none(),
        "each instance names its own server"
    );
    let mut ids = BTreeSet::new();
    for (method, path, op) in operations(&doc) {
        let id = op["operationId"].as_str();
        assert!(
            id.is_some_and(|id| ids.insert(id.to_owned())),
            "{method} {path}: operationId missing or used twice"
        );
        let responses = op["responses"].as_object();
        assert!(
            responses.is_some_and(|r| r.keys().any(|c| c.starts_with('2') || c.starts_with('3'))),
            "{method} {path}: no success response"
        );
        // Under /oauth2/ errors are RFC 6749's (the pages there answer theirs as HTML),
        // everywhere else RFC 9457 problems (or an HTML page).
        let error_schema = if path.starts_with("/oauth2/") {
            "OAuthError"
        } else {
            "Problem"
        };
        for (code, r) in responses.unwrap() {
            if !code.starts_with('4') {
                continue;
            }
            // The response, or the shared one it names.
            let response = match r["$ref"].as_str() {
                Some(to) => doc.pointer(to.trim_start_matches('#')).expect("resolves"),
                None => r,
            };
            let content = &response["content"];
            let mut named = Vec::new();
            refs(content, &mut named);
            assert!(
                named
                    .iter()
                    .any(|r| r.ends_with(&format!("/{error_schema}")))
                    || content.get("text/html").is_some(),
                "{method} {path} {code}: its body is not described as {error_schema}"
            );
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        assert!(
            r.starts_with("#/") && doc.pointer(&r[1..]).is_some(),
            "{r} does not resolve"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_json_is_served_with_this_issuer() {
    let app = spawn(config()).await;
    let res = app
        .http
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/json");
    let served: Value = res.json().await.unwrap();
    assert_eq!(
        served["servers"],
        json!([{ "url": app.state.settings.issuer }])
    );
    assert_eq!(served["openapi"], "3.1.0");
    assert_eq!(documented(&served), documented(&document()));
}
