//! `GET /api/me` and share links (`POST /api/incidents/{id}/share`).

use commandpost_shared::AccessRole;
use serde_json::{Value, json};

use crate::support::TestServer;
use crate::support::yclient::YClient;

async fn share(server: &TestServer, incident: &str, token: &str, body: Value) -> (u16, Value) {
    server
        .post_json(&format!("/api/incidents/{incident}/share"), token, &body)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commander_shares_incident_scoped_links_and_others_cannot() {
    let server = TestServer::start();
    // Two days: a link may not outlive the token that creates it.
    let long = std::time::Duration::from_secs(48 * 3600);
    let ida = server
        .keys()
        .mint("ida", "Ida", AccessRole::Responder, None, long);
    let response = reqwest::Client::new()
        .post(server.url("/api/incidents"))
        .bearer_auth(&ida)
        .json(&json!({"title": "Shared"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    server.create_incident("Another").await;

    let (status, me) = server.get_json("/api/me", &ida).await;
    assert_eq!(status, 200);
    assert_eq!(
        (me["sub"].as_str(), me["name"].as_str(), me["role"].as_str()),
        (Some("ida"), Some("Ida"), Some("responder"))
    );

    // The IC mints a viewer link for one incident.
    let (status, link) = share(
        &server,
        "INC-1",
        &ida,
        json!({"role": "viewer", "name": "Exec on call"}),
    )
    .await;
    assert_eq!(status, 200, "{link}");
    let token = link["token"].as_str().unwrap();
    assert!(
        link["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/?token={token}")),
        "{link}"
    );
    let claims = server.keys().verify(token).unwrap();
    assert_eq!(claims.role, AccessRole::Viewer);
    assert_eq!(
        claims.incident.map(|id| id.to_string()),
        Some("INC-1".to_owned())
    );
    assert_eq!(claims.name, "Exec on call");
    assert!(claims.sub.starts_with("exec-on-call-"), "{}", claims.sub);
    let hours = (claims.exp - claims.iat) / 3600;
    assert_eq!(hours, 24);

    // The link sees only its incident, read-only.
    let (_, list) = server.get_json("/api/incidents", token).await;
    let ids: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["INC-1"]);
    let (status, _) = server.get_json("/api/incidents/INC-2", token).await;
    assert_eq!(status, 403);
    let viewer = YClient::connect(&server.ws_url(&"INC-1".parse().unwrap(), token)).await;
    assert!(viewer.read().starts_with("# INC-1: Shared"));

    // Responder links work too; others may not mint, and nobody mints admins.
    let (status, _) = share(
        &server,
        "INC-1",
        &ida,
        json!({"role": "responder", "name": "Sam", "ttl_hours": 2}),
    )
    .await;
    assert_eq!(status, 200);
    let otto = server.token(AccessRole::Responder, "Otto");
    let (status, refused) = share(
        &server,
        "INC-1",
        &otto,
        json!({"role": "viewer", "name": "x"}),
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("incident commander")
    );
    let (status, _) = share(
        &server,
        "INC-1",
        token,
        json!({"role": "viewer", "name": "x"}),
    )
    .await;
    assert_eq!(status, 403, "a viewer link cannot mint more links");
    let admin = server
        .keys()
        .mint("root", "Root", AccessRole::Admin, None, long);
    let (status, _) = share(
        &server,
        "INC-1",
        &admin,
        json!({"role": "viewer", "name": "x"}),
    )
    .await;
    assert_eq!(status, 200, "admins may share");
    for bad in [
        json!({"role": "admin", "name": "x"}),
        json!({"role": "viewer", "name": " "}),
        json!({"role": "viewer", "name": "x", "ttl_hours": 0}),
        json!({"role": "viewer", "name": "x", "ttl_hours": 1000}),
    ] {
        let (status, body) = share(&server, "INC-1", &ida, bad.clone()).await;
        assert_eq!(status, 422, "{bad}: {body}");
    }
    let (status, _) = share(
        &server,
        "INC-9",
        &admin,
        json!({"role": "viewer", "name": "x"}),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_routes_serve_the_browser_app_and_api_paths_stay_json() {
    let server = TestServer::start();
    // Unless the build was told to skip it, the binary carries the built app
    // (whose page loads hashed modules from /assets/), not the placeholder.
    let app_expected = std::env::var_os("COMMANDPOST_SKIP_WEB").is_none();
    assert_eq!(commandpost::web::is_embedded(), app_expected);
    for path in ["/", "/incidents/INC-1", "/anything/else"] {
        let response = reqwest::get(server.url(path)).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/html"),
            "{path}: {content_type}"
        );
        let page = response.text().await.unwrap();
        assert!(page.contains("<html"), "{path}");
        assert_eq!(
            page.contains("src=\"/assets/"),
            app_expected,
            "{path}: {page}"
        );
        if app_expected {
            let script = page.split("src=\"/assets/").nth(1).unwrap();
            let script = script.split('"').next().unwrap();
            let asset = reqwest::get(server.url(&format!("/assets/{script}")))
                .await
                .unwrap();
            assert_eq!(asset.status(), 200);
            let headers = asset.headers();
            assert!(
                headers["content-type"]
                    .to_str()
                    .unwrap()
                    .contains("javascript")
            );
            assert!(
                headers["cache-control"]
                    .to_str()
                    .unwrap()
                    .contains("immutable")
            );
        }
    }
    let response = reqwest::get(server.url("/assets/does-not-exist.js"))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = reqwest::get(server.url("/api/nope")).await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_link_admits_five_thousand_viewers_with_default_flags() {
    // Each viewer is a socket in this process too.
    rlimit::increase_nofile_limit(12_000).unwrap();
    let server = TestServer::start();
    let incident = server.create_incident("Major outage").await;
    let admin = server.keys().mint(
        "root",
        "Root",
        AccessRole::Admin,
        None,
        std::time::Duration::from_secs(48 * 3600),
    );
    let (status, link) = share(
        &server,
        "INC-1",
        &admin,
        json!({"role": "viewer", "name": "Everyone"}),
    )
    .await;
    assert_eq!(status, 200, "{link}");
    let url = server.ws_url(&incident, link["token"].as_str().unwrap());
    let mut viewers = Vec::new();
    for opened in 0..5_000 {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((socket, _)) => viewers.push(socket),
            Err(error) => panic!("viewer {} was refused: {error}", opened + 1),
        }
    }
    // Each joins its room just after its upgrade answer: wait for the count.
    let started = std::time::Instant::now();
    loop {
        let (_, incident) = server.get_json("/api/incidents/INC-1", &admin).await;
        if incident["presence"]["viewers"] == 5_000 {
            break;
        }
        assert!(
            started.elapsed() < crate::support::WAIT,
            "presence stayed at {}",
            incident["presence"]
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(viewers);
}
