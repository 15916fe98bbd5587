//! Access control and client mistakes at the edges (DESIGN "Contract: access
//! tokens", "Contract: the document WebSocket", "Contract: HTTP API" and the
//! HTTP half of "Contract: bad input"): a missing, forged, expired or
//! out-of-scope token is refused before any document data is sent, with
//! HTTP 401/403 and no WebSocket upgrade; API errors are 4xx with
//! `{"error": {"code", "message"}}`, never 500; tokens never reach the log.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use commandpost::auth::TokenKeys;
use commandpost_shared::{AccessRole, IncidentId, TokenClaims};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use yrs::updates::decoder::Decode;

use crate::support::yclient::YClient;
use crate::support::{TestServer, wait_until};

const TEMPLATE_SECTIONS: [&str; 12] = [
    "## Summary",
    "## Declaration",
    "## Impact",
    "## Detailed status",
    "## Exit criteria",
    "## TODO and bugs filed",
    "## Trigger",
    "## Root causes",
    "## Detection",
    "## Resolution",
    "## Lessons learned",
    "## Notes",
];

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(role: AccessRole, incident: Option<IncidentId>, exp: i64) -> TokenClaims {
    TokenClaims {
        sub: "tess".into(),
        name: "Tess Tester".into(),
        role,
        incident,
        exp,
        iat: now() - 10,
        nbf: None,
        jti: uuid::Uuid::new_v4().simple().to_string(),
        lineage: Vec::new(),
    }
}

/// Signs arbitrary JSON claims with HS256 (or `algorithm`) and `secret`.
fn sign_raw(secret: &[u8], algorithm: jsonwebtoken::Algorithm, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(algorithm),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Asserts the shape `{"error": {"code", "message"}}` and returns the code.
fn error_code(body: &Value, what: &str) -> String {
    let error = body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: no error object in {body}"));
    assert_eq!(
        body.as_object().unwrap().len(),
        1,
        "{what}: only `error` at the top: {body}"
    );
    assert_eq!(
        error.len(),
        2,
        "{what}: error has exactly code and message: {body}"
    );
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        !message.trim().is_empty(),
        "{what}: a message for humans: {body}"
    );
    error["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: code is a string: {body}"))
        .to_owned()
}

/// Tries the WebSocket handshake; it must be refused. Returns the HTTP
/// status and the body, parsed as JSON when there is one.
async fn ws_refusal(
    request: tungstenite::handshake::client::Request,
    what: &str,
) -> (u16, Option<Value>) {
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => panic!("{what}: the upgrade was accepted ({})", response.status()),
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .filter(|bytes| !bytes.is_empty())
                .map(|bytes| {
                    serde_json::from_slice(bytes).unwrap_or_else(|error| {
                        panic!(
                            "{what}: body is not JSON ({error}): {:?}",
                            String::from_utf8_lossy(bytes)
                        )
                    })
                });
            (status, body)
        }
        Err(error) => panic!("{what}: expected an HTTP refusal, got {error}"),
    }
}

fn ws_request(url: &str) -> tungstenite::handshake::client::Request {
    url.into_client_request().unwrap()
}

fn with_bearer(url: &str, token: &str) -> tungstenite::handshake::client::Request {
    let mut request = ws_request(url);
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// Opens the socket and waits for the server's first frame, which must be
/// its sync step 1: the connection is a live document connection.
async fn assert_document_socket(request: tungstenite::handshake::client::Request, what: &str) {
    let (mut socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .unwrap_or_else(|error| panic!("{what}: the upgrade was refused: {error}"));
    assert_eq!(response.status().as_u16(), 101, "{what}");
    let frame = tokio::time::timeout(crate::support::WAIT, async {
        loop {
            match socket.next().await {
                Some(Ok(tungstenite::Message::Binary(bytes))) => return bytes,
                Some(Ok(_)) => continue,
                other => panic!("{what}: socket ended before the greeting: {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: no greeting"));
    let message = yrs::sync::Message::decode_v1(&frame).unwrap();
    assert!(
        matches!(
            message,
            yrs::sync::Message::Sync(yrs::sync::SyncMessage::SyncStep1(_))
        ),
        "{what}: the greeting starts with sync step 1, got {message:?}"
    );
    let _ = socket.close(None).await;
}

/// `POST /api/incidents` with an optional bearer token, content type and
/// raw body; returns status and JSON body (Null when there is none).
async fn post_incident(
    server_url: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    // A refused body (413) is answered before the client has sent all of it,
    // and the server then closes the connection: on a loaded machine the
    // client can still be writing and see a broken pipe instead of the
    // answer. That is transport timing, not the server's answer, so the
    // request is sent again (the answer is the same every time).
    let mut attempts = 0;
    let response = loop {
        let mut request = reqwest::Client::new()
            .post(format!("{server_url}/api/incidents"))
            .body(body.clone());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        match request.send().await {
            Ok(response) => break response,
            Err(error) if error.is_request() && attempts < 20 => attempts += 1,
            Err(error) => panic!("POST /api/incidents: {error}"),
        }
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, headers)
}

fn json_body(value: Value) -> Vec<u8> {
    serde_json::to_vec(&value).unwrap()
}

// ---------------------------------------------------------------------------
// The document WebSocket

/// Every way a token can be wrong is refused with the right status and
/// error code before the upgrade; no document data (not even the title)
/// is in the answer; the incident's document is not loaded for them; and
/// none of the tokens reaches the server log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_refuses_bad_tokens_before_the_upgrade_with_401_403_404() {
    let server = TestServer::start();
    let title = "Secret database outage";
    let incident = server.create_incident(title).await;
    let other_incident = server.create_incident("Unrelated").await;
    let base = format!("ws://{}/ws", server.addr);
    let url = |path: &str, token: &str| format!("{base}/{path}?token={token}");

    let responder = server.token(AccessRole::Responder, "Ria");
    let forged = TokenKeys::from_secret(b"not-the-server-secret-not-the-server-secret").mint(
        "ria",
        "Ria",
        AccessRole::Admin,
        None,
        Duration::from_secs(3600),
    );
    let expired = server
        .keys()
        .sign(&claims(AccessRole::Responder, None, now() - 60));
    let out_of_scope = server.scoped_token(AccessRole::Admin, "Scoped", &other_incident);
    let tampered = {
        // A valid token whose payload was edited to claim admin: the
        // signature no longer matches.
        let token = server.token(AccessRole::Viewer, "Val");
        let parts: Vec<&str> = token.split('.').collect();
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap();
        let payload = String::from_utf8(payload)
            .unwrap()
            .replace("\"viewer\"", "\"admin\"");
        format!("{}.{}.{}", parts[0], b64url(payload.as_bytes()), parts[2])
    };

    let here = incident.to_string();
    let query = |token: &str| ws_request(&url(&here, token));
    let header = |token: &str| with_bearer(&format!("{base}/{incident}"), token);
    #[rustfmt::skip]
    let cases: Vec<(&str, tungstenite::handshake::client::Request, u16, &str)> = vec![
        ("missing token", ws_request(&format!("{base}/{incident}")), 401, "missing_token"),
        ("empty token", query(""), 401, "invalid_token"),
        ("not a JWT", query("not-a-jwt"), 401, "invalid_token"),
        ("forged (another secret)", query(&forged), 401, "invalid_token"),
        ("tampered payload", query(&tampered), 401, "invalid_token"),
        ("expired", query(&expired), 401, "expired_token"),
        ("scoped to another incident", query(&out_of_scope), 403, "forbidden"),
        ("forged, as a bearer header", header(&forged), 401, "invalid_token"),
        ("expired, as a bearer header", header(&expired), 401, "expired_token"),
        ("unknown incident", ws_request(&url("INC-999", &responder)), 404, "incident_not_found"),
        ("malformed incident id", ws_request(&url("nope", &responder)), 404, "incident_not_found"),
        ("id with a leading zero", ws_request(&url("INC-01", &responder)), 404, "incident_not_found"),
    ];
    for (what, request, status, code) in cases {
        let (got, body) = ws_refusal(request, what).await;
        assert_eq!(got, status, "{what}: status (body {body:?})");
        if let Some(body) = body {
            assert_eq!(error_code(&body, what), code, "{what}: error code");
            assert!(
                !body.to_string().contains(title),
                "{what}: no document data in the refusal"
            );
        }
    }
    // Nobody got in: the document was never loaded for a refused client.
    let (status, body) = server
        .get_json(&format!("/api/incidents/{incident}"), &responder)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["presence"],
        json!({"editors": 0, "viewers": 0}),
        "{body}"
    );
    assert!(
        !server.logs().contains("room loaded"),
        "no room was loaded for refused clients"
    );

    // The same server accepts the right token, by query and by header.
    assert_document_socket(query(&responder), "?token=").await;
    assert_document_socket(header(&responder), "bearer header").await;
    let scoped_here = server.scoped_token(AccessRole::Responder, "Scoped", &incident);
    assert_document_socket(query(&scoped_here), "token scoped to this incident").await;

    // No token, good or bad, was logged.
    let logs = server.logs();
    for (what, token) in [
        ("responder", &responder),
        ("forged", &forged),
        ("expired", &expired),
        ("out of scope", &out_of_scope),
        ("tampered", &tampered),
        ("scoped", &scoped_here),
    ] {
        assert!(
            !logs.contains(token.as_str()),
            "the {what} token appears in the server log"
        );
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !logs.contains(signature),
            "the {what} token's signature appears in the server log"
        );
    }
    assert!(
        logs.contains("request refused"),
        "refusals are logged (without the token)"
    );
}

/// Tokens whose claims do not fit (unknown role, missing expiry or subject,
/// malformed incident scope), that use another algorithm, or `alg: none`,
/// are all refused with 401; the same construction with good claims is
/// accepted, so each refusal is about the one defect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_refuses_tokens_with_bad_claims_or_algorithms() {
    // The server signs with a secret this test knows, so that it can sign
    // arbitrary claims (TokenKeys only signs well-formed TokenClaims).
    let secret = "e2e-known-secret-for-raw-claims-0123456789";
    let server = TestServer::start_with(&["--secret", secret]);
    let keys = TokenKeys::from_secret(secret.as_bytes());
    let admin = keys.mint(
        "admin",
        "Admin",
        AccessRole::Admin,
        None,
        Duration::from_secs(3600),
    );
    let (status, body, _) = post_incident(
        &server.url(""),
        Some(&admin),
        Some("application/json"),
        json_body(json!({"title": "Raw claims"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let incident = body["id"].as_str().unwrap().to_owned();
    let url = |token: &str| format!("ws://{}/ws/{incident}?token={token}", server.addr);

    let good = json!({
        "sub": "raw", "name": "Raw", "role": "responder",
        "exp": now() + 3600, "iat": now(), "jti": "j1"
    });
    let with = |key: &str, value: Value| {
        let mut claims = good.clone();
        claims[key] = value;
        claims
    };
    let without = |key: &str| {
        let mut claims = good.clone();
        claims.as_object_mut().unwrap().remove(key);
        claims
    };
    let hs256 = jsonwebtoken::Algorithm::HS256;
    let unsigned = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(good.to_string().as_bytes())
    );
    let sign = |claims: &Value| sign_raw(secret.as_bytes(), hs256, claims);
    #[rustfmt::skip]
    let cases: Vec<(&str, String)> = vec![
        ("role claim `superuser`", sign(&with("role", json!("superuser")))),
        ("role claim `Admin` (wrong case)", sign(&with("role", json!("Admin")))),
        ("no role claim", sign(&without("role"))),
        ("no exp claim", sign(&without("exp"))),
        ("no sub claim", sign(&without("sub"))),
        ("malformed incident scope", sign(&with("incident", json!("nope")))),
        ("HS384 with the right secret", sign_raw(secret.as_bytes(), jsonwebtoken::Algorithm::HS384, &good)),
        ("alg none", unsigned),
    ];
    for (what, token) in &cases {
        let (status, body) = ws_refusal(ws_request(&url(token)), what).await;
        assert_eq!(status, 401, "{what}: status (body {body:?})");
        if let Some(body) = body {
            assert_eq!(error_code(&body, what), "invalid_token", "{what}");
        }
    }
    // The same construction with good claims is accepted.
    assert_document_socket(ws_request(&url(&sign(&good))), "raw good claims").await;
    let logs = server.logs();
    for (what, token) in &cases {
        assert!(
            !logs.contains(token.as_str()),
            "the {what} token appears in the server log"
        );
    }
}

/// A viewer token connects (the upgrade succeeds and the document arrives)
/// but cannot edit: its edit is answered with permission denied and goes
/// nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_token_connects_read_only_and_its_edit_is_denied() {
    let server = TestServer::start();
    let incident = server.create_incident("Read only").await;
    let viewer =
        YClient::connect(&server.ws_url(&incident, &server.token(AccessRole::Viewer, "Vic"))).await;
    assert!(
        viewer.read().starts_with("# INC-1: Read only\n"),
        "the viewer receives the document"
    );
    viewer.insert(0, "VIEWER-EDIT ");
    let seen = viewer.seen.clone();
    wait_until("permission denied for the viewer", || {
        !seen.lock().denied.is_empty()
    })
    .await;
    assert!(
        viewer.seen.lock().denied[0].contains("read-only"),
        "{:?}",
        viewer.seen.lock().denied
    );
    assert!(
        viewer.seen.lock().closed.is_none(),
        "a viewer's edit is denied, not a reason to disconnect"
    );

    // An editor's round trip through storage orders everything before it.
    let editor = YClient::connect_with(
        &server.ws_url(&incident, &server.token(AccessRole::Responder, "Ed")),
        crate::support::yclient::Connect {
            saved_acks: true,
            ..Default::default()
        },
    )
    .await;
    editor.insert(0, "EDITOR ");
    editor.wait_saved().await;
    let fresh =
        YClient::connect(&server.ws_url(&incident, &server.token(AccessRole::Responder, "Fay")))
            .await;
    assert!(
        fresh.read().starts_with("EDITOR # INC-1"),
        "{:?}",
        &fresh.read()[..20]
    );
    assert!(!fresh.read().contains("VIEWER-EDIT"));
    assert!(!editor.read().contains("VIEWER-EDIT"));
}

// ---------------------------------------------------------------------------
// The HTTP API

/// `POST /api/incidents`: every client mistake is a 4xx with the JSON error
/// shape and a stable code, and none of them declares anything; then two
/// good requests declare INC-1 and INC-2 in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declaring_an_incident_refuses_client_mistakes_with_json_errors_then_numbers_in_order() {
    let server = TestServer::start();
    let base = server.url("");
    let admin = server.token(AccessRole::Admin, "Admin");
    let viewer = server.token(AccessRole::Viewer, "Vic");
    let forged = TokenKeys::from_secret(b"not-the-server-secret-not-the-server-secret").mint(
        "admin",
        "Admin",
        AccessRole::Admin,
        None,
        Duration::from_secs(3600),
    );
    let expired = server
        .keys()
        .sign(&claims(AccessRole::Admin, None, now() - 60));
    let scoped = server.scoped_token(AccessRole::Responder, "Sam", &IncidentId::new(1));
    let good = json_body(json!({"title": "Checkout errors"}));
    let json_type = Some("application/json");

    // Who may declare: a good body with the wrong token.
    #[rustfmt::skip]
    let token_cases: [(&str, Option<&str>, u16, &str); 5] = [
        ("no token", None, 401, "missing_token"),
        ("forged token", Some(&forged), 401, "invalid_token"),
        ("expired token", Some(&expired), 401, "expired_token"),
        ("viewer token", Some(&viewer), 403, "forbidden"),
        ("responder token scoped to an incident", Some(&scoped), 403, "forbidden"),
    ];
    for (what, token, status, code) in token_cases {
        let (got, body, _) = post_incident(&base, token, json_type, good.clone()).await;
        assert_eq!(got, status, "{what}: status (body {body})");
        assert_eq!(error_code(&body, what), code, "{what}: error code");
    }
    // What may be declared: an admin token with a bad body.
    let title = |title: Value| json_body(json!({ "title": title }));
    type BodyCase = (
        &'static str,
        Option<&'static str>,
        Vec<u8>,
        u16,
        &'static str,
    );
    #[rustfmt::skip]
    let body_cases: [BodyCase; 10] = [
        ("malformed JSON", json_type, b"{\"title\": ".to_vec(), 400, "invalid_body"),
        ("not JSON at all", json_type, vec![0xff, 0xfe, 0x00], 400, "invalid_body"),
        ("wrong content type", Some("text/plain"), good.clone(), 415, "invalid_body"),
        ("no content type", None, good.clone(), 415, "invalid_body"),
        ("missing title", json_type, json_body(json!({})), 422, "invalid_body"),
        ("title is not a string", json_type, title(json!(5)), 422, "invalid_body"),
        ("empty title", json_type, title(json!("")), 422, "invalid_title"),
        ("whitespace title", json_type, title(json!(" \t\n ")), 422, "invalid_title"),
        ("201-character title", json_type, title(json!("t".repeat(201))), 422, "invalid_title"),
        ("3 MB body", json_type, title(json!("x".repeat(3 << 20))), 413, "invalid_body"),
    ];
    for (what, content_type, body, status, code) in body_cases {
        let (got, body, _) = post_incident(&base, Some(&admin), content_type, body).await;
        assert_eq!(got, status, "{what}: status (body {body})");
        assert_eq!(error_code(&body, what), code, "{what}: error code");
    }
    let (status, list) = server.get_json("/api/incidents", &admin).await;
    assert_eq!(status, 200);
    assert_eq!(list, json!([]), "no refused request declared anything");

    // Good requests: 201, Location, sequential ids, trimmed titles.
    let (status, body, headers) = post_incident(&base, Some(&admin), json_type, good).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"], json!("INC-1"));
    assert_eq!(body["title"], json!("Checkout errors"));
    assert_eq!(body["created_by"], json!({"id": "admin", "name": "Admin"}));
    assert_eq!(body["presence"], json!({"editors": 0, "viewers": 0}));
    assert_eq!(headers.get("location").unwrap(), "/api/incidents/INC-1");
    // Exactly 200 characters (of two bytes each) is allowed; padding trimmed.
    let long = "é".repeat(200);
    let responder = server.token(AccessRole::Responder, "Ria");
    let (status, body, headers) = post_incident(
        &base,
        Some(&responder),
        json_type,
        json_body(json!({ "title": format!("  {long}\n") })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"], json!("INC-2"));
    assert_eq!(body["title"], json!(long));
    assert_eq!(body["created_by"], json!({"id": "ria", "name": "Ria"}));
    assert_eq!(headers.get("location").unwrap(), "/api/incidents/INC-2");
    let (status, fetched) = server.get_json("/api/incidents/INC-2", &viewer).await;
    assert_eq!(status, 200);
    assert_eq!(fetched["title"], json!(long));
    assert!(
        !server.logs().contains(" ERROR "),
        "no server error for client mistakes:\n{}",
        server.logs()
    );
}

/// The request body is a JSON object with a `title`: other JSON values that
/// happen to deserialize into the same struct (serde accepts a struct as a
/// sequence of its fields) are client mistakes too, and declare nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declaring_an_incident_with_a_non_object_body_is_refused() {
    let server = TestServer::start();
    let admin = server.token(AccessRole::Admin, "Admin");
    for body in [
        json!(["Checkout errors"]),
        json!("Checkout errors"),
        json!(null),
        json!(42),
    ] {
        let what = format!("body {body}");
        let (status, answer, _) = post_incident(
            &server.url(""),
            Some(&admin),
            Some("application/json"),
            json_body(body),
        )
        .await;
        assert_eq!(status, 422, "{what}: status (answer {answer})");
        assert_eq!(error_code(&answer, &what), "invalid_body", "{what}");
    }
    let (status, list) = server.get_json("/api/incidents", &admin).await;
    assert_eq!((status, list), (200, json!([])), "nothing was declared");
}

/// Reads: a scoped token lists and gets only its incident; unknown ids,
/// malformed ids and unknown paths are JSON 404s; a bad token is a 401 on
/// every route; /healthz needs no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_incidents_respects_scope_and_unknown_things_are_json_404s() {
    let server = TestServer::start();
    let first = server.create_incident("First").await;
    let second = server.create_incident("Second").await;
    assert_eq!(
        (first.to_string().as_str(), second.to_string().as_str()),
        ("INC-1", "INC-2")
    );
    let viewer = server.token(AccessRole::Viewer, "Vic");
    let scoped = server.scoped_token(AccessRole::Viewer, "Sid", &second);

    let (status, all) = server.get_json("/api/incidents", &viewer).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["INC-1", "INC-2"]);
    let (status, mine) = server.get_json("/api/incidents", &scoped).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["INC-2"], "a scoped token lists only its incident");
    let (status, body) = server.get_json("/api/incidents/INC-2", &scoped).await;
    assert_eq!((status, body["title"].clone()), (200, json!("Second")));

    let expired = server
        .keys()
        .sign(&claims(AccessRole::Viewer, None, now() - 60));
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, Option<&str>, u16, &str)> = vec![
        ("another incident, scoped token", "/api/incidents/INC-1", Some(&scoped), 403, "forbidden"),
        ("unknown incident", "/api/incidents/INC-999", Some(&viewer), 404, "incident_not_found"),
        ("malformed incident id", "/api/incidents/nope", Some(&viewer), 404, "incident_not_found"),
        ("list without a token", "/api/incidents", None, 401, "missing_token"),
        ("get without a token", "/api/incidents/INC-1", None, 401, "missing_token"),
        ("list with an expired token", "/api/incidents", Some(&expired), 401, "expired_token"),
        ("list with a garbage token", "/api/incidents", Some("garbage"), 401, "invalid_token"),
        ("unknown API path", "/api/nope", Some(&viewer), 404, "not_found"),
        ("unknown API path, no token", "/api/nope", None, 404, "not_found"),
        ("an unknown path deep under the API", "/api/nope/nope", None, 404, "not_found"),
    ];
    for (what, path, token, status, code) in cases {
        let mut request = reqwest::Client::new().get(server.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{what}");
        let content_type = response.headers().get("content-type").cloned();
        assert_eq!(
            content_type.as_ref().and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{what}: JSON error"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(error_code(&body, what), code, "{what}");
    }

    let response = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");
}

/// A request with a method an API route does not take is a client mistake
/// like any other: 405 with the JSON error shape (not an empty body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_method_on_an_api_route_is_a_405_with_a_json_error() {
    let server = TestServer::start();
    let admin = server.token(AccessRole::Admin, "Admin");
    server.create_incident("Method").await;
    let client = reqwest::Client::new();
    for (method, path) in [
        (reqwest::Method::DELETE, "/api/incidents"),
        (reqwest::Method::PUT, "/api/incidents/INC-1"),
        (reqwest::Method::POST, "/healthz"),
    ] {
        let what = format!("{method} {path}");
        let response = client
            .request(method, server.url(path))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 405, "{what}");
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{what}: 405 without a JSON error body: {text:?}"));
        error_code(&body, &what);
    }
}

/// A new incident's document is the template: title line, then its sections
/// in order (the live document's, then the postmortem's), with who declared
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_incident_document_starts_from_the_template() {
    let server = TestServer::start();
    let incident = server.create_incident("Checkout errors").await;
    let client =
        YClient::connect(&server.ws_url(&incident, &server.token(AccessRole::Viewer, "Vic"))).await;
    let text = client.read();
    assert!(text.starts_with("# INC-1: Checkout errors\n"), "{text}");
    let mut last = 0;
    for section in TEMPLATE_SECTIONS {
        let line = format!("\n{section}\n");
        let at = text[last..]
            .find(&line)
            .unwrap_or_else(|| panic!("{section} missing or out of order in:\n{text}"));
        last += at + line.len();
    }
    assert_eq!(
        text.matches("\n## ").count(),
        TEMPLATE_SECTIONS.len(),
        "exactly these sections:\n{text}"
    );
    assert!(text.contains("Declared by Admin"), "{text}");
}

// ---------------------------------------------------------------------------
// The `token` command

fn run_token_cli(data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_commandpost"))
        .arg("token")
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("COMMANDPOST_SECRET")
        .env_remove("COMMANDPOST_DATA")
        .output()
        .unwrap()
}

/// `commandpost token` without COMMANDPOST_SECRET creates `<data>/secret`
/// (mode 0600) and prints a token with the requested claims, which a
/// server serving that data directory accepts (and whose scope it enforces).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_command_creates_a_private_secret_and_prints_a_token_the_server_accepts() {
    let data = tempfile::Builder::new()
        .prefix("commandpost-cli")
        .tempdir()
        .unwrap();
    let output = run_token_cli(
        data.path(),
        &[
            "--role",
            "viewer",
            "--incident",
            "INC-3",
            "--name",
            "Vic Viewer",
            "--ttl",
            "1h",
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let token = stdout.trim();
    assert_eq!(
        stdout.lines().count(),
        1,
        "only the token on stdout: {stdout:?}"
    );
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    let secret = data.path().join("secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o600,
            "the secret is readable by its owner only (mode {mode:o})"
        );
    }
    assert!(std::fs::read(&secret).unwrap().len() >= 32);

    let keys = TokenKeys::load(data.path(), None).unwrap();
    let claims = keys.verify(token).unwrap();
    assert_eq!(claims.role, AccessRole::Viewer);
    assert_eq!(claims.incident, Some(IncidentId::new(3)));
    assert_eq!(claims.name, "Vic Viewer");
    assert_eq!(claims.sub, "vic-viewer");
    assert!(
        (claims.exp - (now() + 3600)).abs() <= 5,
        "exp {} is about now + 1h",
        claims.exp
    );
    assert!((claims.iat - now()).abs() <= 5);
    assert!(!claims.jti.is_empty());

    // A second run reuses the secret: the first token still verifies.
    let before = std::fs::read(&secret).unwrap();
    let again = run_token_cli(data.path(), &["--role", "admin", "--name", "Ada"]);
    assert!(again.status.success());
    assert_eq!(
        std::fs::read(&secret).unwrap(),
        before,
        "the secret is not regenerated"
    );
    let admin = String::from_utf8(again.stdout).unwrap().trim().to_owned();
    assert_eq!(
        TokenKeys::load(data.path(), None)
            .unwrap()
            .verify(&admin)
            .unwrap()
            .incident,
        None
    );

    // A server on that data directory accepts both; the viewer token is
    // limited to INC-3. Logging at trace level, no token is in its log.
    let server = OwnServer::start(data.path());
    let client = reqwest::Client::new();
    for n in 1..=3 {
        let response = client
            .post(format!("{}/api/incidents", server.base))
            .bearer_auth(&admin)
            .json(&json!({ "title": format!("Incident {n}") }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
    }
    let response = client
        .get(format!("{}/api/incidents", server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let listed: Value = response.json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["id"], json!("INC-3"));
    let ws = |id: &str| format!("ws://{}/ws/{id}?token={token}", server.addr);
    assert_document_socket(ws_request(&ws("INC-3")), "CLI viewer token on INC-3").await;
    let (status, _) = ws_refusal(ws_request(&ws("INC-2")), "CLI viewer token on INC-2").await;
    assert_eq!(status, 403);
    let logs = server.logs();
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "the server logged at a verbose level"
    );
    for (what, token) in [("viewer", token), ("admin", admin.as_str())] {
        assert!(
            !logs.contains(token),
            "the {what} token appears in the trace-level log"
        );
        assert!(
            !logs.contains(token.rsplit('.').next().unwrap()),
            "the {what} token's signature is in the log"
        );
    }
}

/// An unknown role is refused with a message naming the valid ones, and a
/// non-zero exit status; no token is printed.
#[test]
fn token_command_refuses_an_unknown_role_naming_the_valid_ones() {
    let data = tempfile::Builder::new()
        .prefix("commandpost-cli")
        .tempdir()
        .unwrap();
    let output = run_token_cli(data.path(), &["--role", "root", "--name", "Rob"]);
    assert!(!output.status.success(), "exit status {:?}", output.status);
    assert!(
        output.stdout.is_empty(),
        "nothing on stdout: {:?}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("root"), "names the bad value: {stderr}");
    for role in ["admin", "responder", "viewer"] {
        assert!(
            stderr.contains(role),
            "names the valid role {role}: {stderr}"
        );
    }
    let output = run_token_cli(
        data.path(),
        &["--role", "viewer", "--incident", "nope", "--name", "Rob"],
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("INC-"),
        "explains the incident id format"
    );
}

// ---------------------------------------------------------------------------

/// A server this file starts itself: no COMMANDPOST_SECRET (the secret comes
/// from the data directory) and logging at trace level. Killed on drop.
struct OwnServer {
    child: Child,
    addr: String,
    base: String,
    log: tempfile::NamedTempFile,
    _stdout: BufReader<std::process::ChildStdout>,
}

impl OwnServer {
    fn start(data: &Path) -> Self {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_commandpost"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .env_remove("COMMANDPOST_SECRET")
            .env("COMMANDPOST_LOG", "trace")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let addr = loop {
            line.clear();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "server exited before listening"
            );
            if let Some(rest) = line.trim().strip_prefix("Listening on:") {
                break rest.trim().trim_start_matches("http://").to_owned();
            }
        };
        Self {
            child,
            base: format!("http://{addr}"),
            addr,
            log,
            _stdout: stdout,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap()
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
