//! The harness of the cluster milestone works with the real engines: a
//! private Redis (`support::redis`) and an HAProxy (`support::haproxy`) in
//! front of `commandpost` nodes on distinct loopback addresses sharing one
//! PostgreSQL database (`TestServer::start_on_url_at`,
//! `TestServer::start_peer_at`). Faults are real (SIGKILL); every wait is
//! for a condition, bounded by `support::WAIT`.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use commandpost_shared::AccessRole;

use crate::support::haproxy::{self, HaProxy};
use crate::support::redis::{ACL_USER, RedisAuth, RedisServer};
use crate::support::yclient::{Connect, YClient};
use crate::support::{TestServer, WAIT, test_postgres};

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

#[test]
fn redis_answers_and_a_killed_one_restarts_empty() {
    let mut redis = RedisServer::start();
    assert_eq!(redis.auth(), &RedisAuth::None);
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
    assert_eq!(redis.cli(&["PING"]).trim(), "PONG");
    assert_eq!(redis.cli(&["SET", "incident", "open"]).trim(), "OK");
    assert_eq!(redis.cli(&["GET", "incident"]).trim(), "open");
    let calls = redis.command_calls();
    assert_eq!(calls.get("set"), Some(&1), "{calls:?}");
    assert_eq!(calls.get("get"), Some(&1), "{calls:?}");
    assert!(calls.get("ping").is_some_and(|&n| n >= 1), "{calls:?}");
    assert_eq!(redis.info("persistence")["aof_enabled"], "0");

    let port = redis.port();
    let pid = redis.pid();
    redis.kill9();
    assert!(!redis.is_running());
    assert!(
        std::fs::metadata(format!("/proc/{pid}")).is_err(),
        "the killed redis-server process is gone"
    );
    assert!(redis.try_cli(&["PING"]).is_err(), "a killed server answers");

    redis.restart();
    assert!(redis.is_running());
    assert_eq!(redis.port(), port, "restarts on the same port");
    assert_eq!(redis.cli(&["PING"]).trim(), "PONG");
    assert_eq!(
        redis.cli(&["EXISTS", "incident"]).trim(),
        "0",
        "no persistence: the data is gone"
    );
    assert_eq!(redis.command_calls().get("set"), None);
}

#[test]
fn redis_with_a_password_refuses_clients_without_it() {
    let redis = RedisServer::start_with_password();
    let RedisAuth::Password(password) = redis.auth().clone() else {
        panic!("a password server");
    };
    assert_eq!(
        redis.url(),
        format!("redis://:{password}@127.0.0.1:{}", redis.port())
    );
    assert_eq!(redis.cli(&["PING"]).trim(), "PONG");
    let refused = redis.cli_unauthenticated(&["PING"]).unwrap_err();
    assert!(refused.contains("NOAUTH"), "{refused}");
}

#[test]
fn redis_with_an_acl_user_refuses_the_default_user() {
    let redis = RedisServer::start_with_user();
    let RedisAuth::User { name, password } = redis.auth().clone() else {
        panic!("an ACL user server");
    };
    assert_eq!(name, ACL_USER);
    assert_eq!(
        redis.url(),
        format!("redis://{name}:{password}@127.0.0.1:{}", redis.port())
    );
    assert_eq!(redis.cli(&["ACL", "WHOAMI"]).trim(), ACL_USER);
    assert!(redis.cli_unauthenticated(&["PING"]).is_err());
}

/// GETs `path` through the proxy `times` times; the backends that answered.
async fn served(proxy: &HaProxy, path: &str, times: usize) -> Vec<SocketAddr> {
    let client = reqwest::Client::new();
    let mut backends = Vec::new();
    for _ in 0..times {
        let response = client.get(proxy.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path} through the proxy");
        let backend = haproxy::served_by(response.headers())
            .unwrap_or_else(|| panic!("no {} header", haproxy::SERVED_BY));
        backends.push(backend);
    }
    backends
}

/// GETs `/healthz` through the proxy until every one of `nodes` has
/// answered (round robin: two requests suffice while all are up; a health
/// check failing under load may take a node out for a moment).
async fn reaches_all(proxy: &HaProxy, nodes: &[SocketAddr]) {
    let want: HashSet<SocketAddr> = nodes.iter().copied().collect();
    let mut seen = HashSet::new();
    let mut sent = Vec::new();
    let started = std::time::Instant::now();
    while seen != want {
        assert!(
            started.elapsed() < WAIT,
            "requests through the proxy never reached every node: {sent:?}"
        );
        let backend = served(proxy, "/healthz", 1).await[0];
        assert!(want.contains(&backend), "{backend} is not a node");
        seen.insert(backend);
        sent.push(backend);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_balances_two_nodes_on_one_database_and_survives_a_kill() {
    let database = test_postgres::fresh_database();
    let mut a = TestServer::start_on_url_at(loopback(2), &database, &[]);
    let b = a.start_peer_at(loopback(3));
    assert_eq!(a.addr.ip(), loopback(2));
    assert_eq!(b.addr.ip(), loopback(3));
    assert_eq!(a.secret(), b.secret());
    let mut proxy = HaProxy::start(&[a.addr, b.addr]);
    proxy.wait_all_up().await;

    // Round robin, no stickiness: one client's requests reach both nodes.
    reaches_all(&proxy, &[a.addr, b.addr]).await;

    // One database, one secret: an incident declared through the proxy is
    // seen by each node, with a token minted for either.
    let admin = a.token(AccessRole::Admin, "Admin");
    let response = reqwest::Client::new()
        .post(proxy.url("/api/incidents"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "title": "Checkout down" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.unwrap();
    let incident: commandpost_shared::IncidentId = body["id"].as_str().unwrap().parse().unwrap();
    for node in [&a, &b] {
        let (status, got) = node
            .get_json(&format!("/api/incidents/{incident}"), &admin)
            .await;
        assert_eq!(status, 200, "{} on {}", got, node.addr);
        assert_eq!(got["title"], "Checkout down");
    }

    // A document WebSocket through the proxy: upgrade, sync, edit, saved;
    // the other node then loads the same text from the database.
    let token = b.token(AccessRole::Responder, "Ada");
    let writer = YClient::connect_with(
        &proxy.ws_url(&incident, &token),
        Connect {
            saved_acks: true,
            ..Connect::default()
        },
    )
    .await;
    writer.wait_synced().await;
    let before = writer.read();
    writer.push("through the proxy");
    writer.wait_saved().await;
    let expected = writer.read();
    assert_ne!(before, expected);
    for node in [&a, &b] {
        let reader = YClient::connect(&node.ws_url(&incident, &token)).await;
        reader.wait_synced().await;
        reader.wait_text(&expected).await;
    }

    // Kill node a: once HAProxy marks it down, everything goes to b.
    a.kill9();
    proxy.wait_down(a.addr).await;
    let backends = served(&proxy, "/healthz", 6).await;
    assert!(
        backends.iter().all(|&backend| backend == b.addr),
        "{backends:?}"
    );

    // a comes back on its address; HAProxy sends it traffic again.
    a.restart();
    assert_eq!(a.addr.ip(), loopback(2));
    if !proxy.backends().contains(&a.addr) {
        // Its port was taken meanwhile.
        proxy.reload_with(&[a.addr, b.addr]);
    }
    proxy.wait_all_up().await;
    reaches_all(&proxy, &[a.addr, b.addr]).await;
    assert!(proxy.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_reload_swaps_backends_and_keeps_open_websockets() {
    let database = test_postgres::fresh_database();
    let a = TestServer::start_on_url_at(loopback(4), &database, &[]);
    let b = a.start_peer_at(loopback(5));
    let mut proxy = HaProxy::start(&[a.addr]);
    proxy.wait_all_up().await;
    assert!(
        served(&proxy, "/healthz", 4)
            .await
            .iter()
            .all(|&n| n == a.addr)
    );

    let incident = a.create_incident("Reload").await;
    let token = a.token(AccessRole::Responder, "Ada");
    let open = YClient::connect_with(
        &proxy.ws_url(&incident, &token),
        Connect {
            saved_acks: true,
            ..Connect::default()
        },
    )
    .await;
    open.wait_synced().await;

    let port = proxy.addr();
    proxy.reload_with(&[b.addr]);
    assert_eq!(proxy.addr(), port, "the same frontend port");
    proxy.wait_all_up().await;
    assert!(
        served(&proxy, "/healthz", 4)
            .await
            .iter()
            .all(|&n| n == b.addr)
    );

    // The socket opened before the reload (to a, through the old process)
    // still works; b loads what it saved.
    open.push("after the reload");
    open.wait_saved().await;
    let text = open.read();
    let reader = YClient::connect(&proxy.ws_url(&incident, &token)).await;
    reader.wait_synced().await;
    reader.wait_text(&text).await;

    // The proxy itself crashes and comes back on its port.
    proxy.kill9();
    assert!(!proxy.is_running());
    assert!(reqwest::get(proxy.url("/healthz")).await.is_err());
    proxy.restart();
    proxy.wait_all_up().await;
    assert!(
        served(&proxy, "/healthz", 2)
            .await
            .iter()
            .all(|&n| n == b.addr)
    );
}
