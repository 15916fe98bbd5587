//! Every route against every kind of caller, from one table.
//!
//! Each route of the server (`commandpost::api::route_paths`, the list the
//! router is built from) must have a row here naming its policy; the test
//! fails on a route without one, so a new route cannot skip the check.
//! Each policy says, for each kind of caller, which status to expect.

use std::collections::BTreeSet;
use std::time::Duration;

use commandpost::auth::new_claims;
use commandpost_shared::{AccessRole, IncidentId};
use serde_json::{Value, json};

use crate::support::TestServer;

/// Who may call a route.
#[derive(Clone, Copy, Debug)]
enum Policy {
    /// Anyone, with or without a token.
    Public,
    /// Any valid token.
    AnyToken,
    /// Any valid token that can write, whatever its scope.
    AnyWriter,
    /// A token that can write and covers every incident.
    Declare,
    /// A token covering the incident.
    IncidentRead,
    /// A token covering the incident that can write.
    IncidentWrite,
    /// A writing token covering the incident, held by its commander or an
    /// admin.
    Share,
    /// An admin token covering every incident.
    ServerAdmin,
}

struct Row {
    /// The route as `route_paths` names it.
    route: &'static str,
    method: &'static str,
    /// The path requested (INC-1 exists, declared by `ida`).
    path: &'static str,
    body: Option<Value>,
    policy: Policy,
    /// A WebSocket upgrade (answers 101 when allowed).
    upgrade: bool,
}

fn row(route: &'static str, method: &'static str, path: &'static str, policy: Policy) -> Row {
    Row {
        route,
        method,
        path,
        body: None,
        policy,
        upgrade: false,
    }
}

fn table() -> Vec<Row> {
    use Policy::*;
    let mut rows = vec![
        row("/assets/{*path}", "GET", "/assets/none.js", Public),
        row("/healthz", "GET", "/healthz", Public),
        row("/readyz", "GET", "/readyz", Public),
        row("/metrics", "GET", "/metrics", Public),
        row("/api/openapi.json", "GET", "/api/openapi.json", Public),
        row("/api/incidents", "GET", "/api/incidents", AnyToken),
        row("/api/me", "GET", "/api/me", AnyToken),
        row("/api/people", "GET", "/api/people?q=i", AnyWriter),
        row(
            "/api/incidents/{id}",
            "GET",
            "/api/incidents/INC-1",
            IncidentRead,
        ),
        row(
            "/api/incidents/{id}/state",
            "GET",
            "/api/incidents/INC-1/state",
            IncidentRead,
        ),
        row(
            "/api/incidents/{id}/timeline",
            "GET",
            "/api/incidents/INC-1/timeline",
            IncidentRead,
        ),
        row(
            "/api/incidents/{id}/roles/history",
            "GET",
            "/api/incidents/INC-1/roles/history",
            IncidentRead,
        ),
        row(
            "/api/incidents/{id}/briefing",
            "GET",
            "/api/incidents/INC-1/briefing",
            IncidentRead,
        ),
        row(
            "/api/incidents/{id}/events",
            "GET",
            "/api/incidents/INC-1/events",
            IncidentRead,
        ),
        row(
            "/api/incidents/{id}/postmortem.md",
            "GET",
            "/api/incidents/INC-1/postmortem.md",
            IncidentRead,
        ),
        row(
            "/api/admin/quarantine",
            "GET",
            "/api/admin/quarantine",
            ServerAdmin,
        ),
        row("/api/admin/backup", "GET", "/api/admin/backup", ServerAdmin),
        row("/api/admin/tokens", "GET", "/api/admin/tokens", ServerAdmin),
        row(
            "/api/tokens/revoked",
            "GET",
            "/api/tokens/revoked",
            ServerAdmin,
        ),
    ];
    rows.push(Row {
        body: Some(json!({"title": "Matrix"})),
        ..row("/api/incidents", "POST", "/api/incidents", Declare)
    });
    rows.push(Row {
        body: Some(json!({"text": "matrix note"})),
        ..row(
            "/api/incidents/{id}/commands/{name}",
            "POST",
            "/api/incidents/INC-1/commands/post_note",
            IncidentWrite,
        )
    });
    rows.push(Row {
        body: Some(json!({"role": "viewer", "name": "Matrix", "ttl_hours": 1})),
        ..row(
            "/api/incidents/{id}/share",
            "POST",
            "/api/incidents/INC-1/share",
            Share,
        )
    });
    rows.push(Row {
        body: Some(json!({"minted_by": "nobody"})),
        ..row(
            "/api/admin/tokens/revoke",
            "POST",
            "/api/admin/tokens/revoke",
            ServerAdmin,
        )
    });
    rows.push(Row {
        body: Some(json!({})),
        ..row(
            "/api/tokens/{jti}/revoke",
            "POST",
            "/api/tokens/matrix-test/revoke",
            ServerAdmin,
        )
    });
    rows.push(Row {
        upgrade: true,
        ..row("/ws/{id}", "GET", "/ws/INC-1", IncidentRead)
    });
    rows
}

/// Which incidents a token covers, relative to INC-1.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scope {
    Every,
    ThisIncident,
    OtherIncident,
}

struct CallerKind {
    label: &'static str,
    token: Option<String>,
    /// `None`: the token is missing, forged, expired or revoked.
    access: Option<(AccessRole, Scope)>,
    commander: bool,
}

fn callers(server: &TestServer, revoked: String) -> Vec<CallerKind> {
    let mint = |user: &str, role: AccessRole, scope: Scope| {
        let incident = match scope {
            Scope::Every => None,
            Scope::ThisIncident => Some(IncidentId::new(1)),
            Scope::OtherIncident => Some(IncidentId::new(2)),
        };
        server
            .keys()
            .mint(user, user, role, incident, Duration::from_secs(48 * 3600))
    };
    let valid = |label, user, role, scope, commander| CallerKind {
        label,
        token: Some(mint(user, role, scope)),
        access: Some((role, scope)),
        commander,
    };
    let mut expired = new_claims(
        "eve",
        "Eve",
        AccessRole::Admin,
        None,
        Duration::from_secs(60),
    );
    expired.exp = chrono::Utc::now().timestamp() - 10;
    let forged = commandpost::auth::TokenKeys::from_secret(&[7u8; 40]).mint(
        "eve",
        "Eve",
        AccessRole::Admin,
        None,
        Duration::from_secs(3600),
    );
    let refused = |label, token: Option<String>| CallerKind {
        label,
        token,
        access: None,
        commander: false,
    };
    use AccessRole::*;
    use Scope::*;
    vec![
        refused("no token", None),
        refused("garbage", Some("not-a-token".into())),
        refused("forged", Some(forged)),
        refused("expired", Some(server.keys().sign(&expired))),
        refused("revoked", Some(revoked)),
        valid("viewer", "vera", Viewer, Every, false),
        valid("viewer of INC-1", "vic", Viewer, ThisIncident, false),
        valid("viewer of INC-2", "val", Viewer, OtherIncident, false),
        valid("the commander, read-only", "ida", Viewer, Every, true),
        valid("responder", "rex", Responder, Every, false),
        valid("responder of INC-1", "rhea", Responder, ThisIncident, false),
        valid("responder of INC-2", "ron", Responder, OtherIncident, false),
        valid("the commander", "ida", Responder, Every, true),
        valid("admin of INC-1", "ada", Admin, ThisIncident, false),
        valid("admin of INC-2", "abe", Admin, OtherIncident, false),
        valid("admin", "root", Admin, Every, false),
    ]
}

/// The status `caller` must get from a route with `policy`.
fn expected(policy: Policy, caller: &CallerKind, upgrade: bool) -> u16 {
    let ok = if upgrade { 101 } else { 200 };
    let Some((role, scope)) = caller.access else {
        return if matches!(policy, Policy::Public) {
            200
        } else {
            401
        };
    };
    let covers = scope != Scope::OtherIncident;
    let writes = role != AccessRole::Viewer;
    let allowed = match policy {
        Policy::Public | Policy::AnyToken => true,
        Policy::AnyWriter => writes,
        Policy::Declare => writes && scope == Scope::Every,
        Policy::IncidentRead => covers,
        Policy::IncidentWrite => covers && writes,
        Policy::Share => covers && writes && (caller.commander || role == AccessRole::Admin),
        Policy::ServerAdmin => role == AccessRole::Admin && scope == Scope::Every,
    };
    match (allowed, policy) {
        (true, Policy::Declare) => 201,
        (true, _) => ok,
        (false, _) => 403,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_kind_of_caller_as_its_policy_says() {
    let server = TestServer::start();
    let table = table();

    // Every route of the router has a row, and every row a route.
    let routes: BTreeSet<&str> = commandpost::api::route_paths().into_iter().collect();
    let covered: BTreeSet<&str> = table.iter().map(|row| row.route).collect();
    assert_eq!(
        routes, covered,
        "a route without a row in the access matrix (or a row for a route that is gone)"
    );

    let long = Duration::from_secs(48 * 3600);
    let ida = server
        .keys()
        .mint("ida", "ida", AccessRole::Responder, None, long);
    let (status, body) = server
        .post_json("/api/incidents", &ida, &json!({"title": "One"}))
        .await;
    assert_eq!(status, 201, "{body}");
    server.create_incident("Two").await;
    let admin = server
        .keys()
        .mint("root", "root", AccessRole::Admin, None, long);
    let revoked = server.token(AccessRole::Admin, "Rev");
    let jti = server.keys().verify(&revoked).unwrap().jti;
    let (status, _) = server
        .post_json(&format!("/api/tokens/{jti}/revoke"), &admin, &json!({}))
        .await;
    assert_eq!(status, 200);

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for caller in callers(&server, revoked) {
        for row in &table {
            let mut request = match row.method {
                "GET" => client.get(server.url(row.path)),
                "POST" => client.post(server.url(row.path)),
                other => panic!("no method {other}"),
            };
            if let Some(token) = &caller.token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = &row.body {
                request = request.json(body);
            }
            if row.upgrade {
                request = request
                    .header("Connection", "Upgrade")
                    .header("Upgrade", "websocket")
                    .header("Sec-WebSocket-Version", "13")
                    .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let want = expected(row.policy, &caller, row.upgrade);
            // Public routes may answer 404 (an unknown asset) but never
            // refuse a caller.
            let public_ok = matches!(row.policy, Policy::Public) && status != 401 && status != 403;
            if status != want && !public_ok {
                let text = if row.upgrade || row.path.ends_with("/events") {
                    String::new()
                } else {
                    response.text().await.unwrap_or_default()
                };
                failures.push(format!(
                    "{} {} as {}: got {status}, want {want} {text}",
                    row.method, row.path, caller.label
                ));
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
