//! Tokens never create access broader than their own (role, incident scope,
//! lifetime); the token registry; revocation reaches what a token minted;
//! reserved ids and tokens from the future are refused.

use std::time::Duration;

use commandpost::auth::new_claims;
use commandpost_shared::{AccessRole, IncidentId};
use serde_json::{Value, json};

use crate::support::TestServer;
use crate::support::yclient::YClient;

async fn share(server: &TestServer, token: &str, body: Value) -> (u16, Value) {
    server
        .post_json("/api/incidents/INC-1/share", token, &body)
        .await
}

/// A token for `user` with a lifetime of `hours`.
fn token_for(server: &TestServer, user: &str, role: AccessRole, hours: u64) -> String {
    server
        .keys()
        .mint(user, user, role, None, Duration::from_secs(hours * 3600))
}

/// Declares INC-1 with `token` (its holder becomes the commander).
async fn declare(server: &TestServer, token: &str) {
    let (status, body) = server
        .post_json("/api/incidents", token, &json!({"title": "Checkout down"}))
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_token_cannot_mint_links_even_when_its_subject_is_the_commander() {
    let server = TestServer::start();
    let ida = token_for(&server, "ida", AccessRole::Responder, 48);
    declare(&server, &ida).await;
    // The same person, signed in read-only.
    let ida_reading = token_for(&server, "ida", AccessRole::Viewer, 48);
    for role in ["responder", "viewer"] {
        let (status, body) =
            share(&server, &ida_reading, json!({"role": role, "name": "Sam"})).await;
        assert_eq!(status, 403, "a viewer token minted a {role} link: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("viewer token"),
            "{body}"
        );
    }
    // A viewer who was force-assigned a role still cannot mint with it.
    let admin = token_for(&server, "root", AccessRole::Admin, 48);
    let (status, link) = share(&server, &admin, json!({"role": "viewer", "name": "Vic"})).await;
    assert_eq!(status, 200, "{link}");
    let vic = link["token"].as_str().unwrap().to_owned();
    let vic_id = link["user"].as_str().unwrap();
    let (status, body) = server
        .post_json(
            "/api/incidents/INC-1/commands/force_assign_role",
            &admin,
            &json!({"role": "incident_commander", "to": {"id": vic_id, "name": "Vic"}, "reason": "test"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = share(
        &server,
        &vic,
        json!({"role": "responder", "name": "Mallory"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // What a viewer holding a role may do: nothing, with that token.
    let (status, body) = server
        .post_json(
            "/api/incidents/INC-1/commands/post_note",
            &vic,
            &json!({"text": "I am in command"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_never_outlives_or_outranks_the_token_that_mints_it() {
    let server = TestServer::start();
    let ida = token_for(&server, "ida", AccessRole::Responder, 3);
    declare(&server, &ida).await;
    // A 3-hour token cannot mint a 168-hour (or 24-hour default) link.
    for body in [
        json!({"role": "viewer", "name": "Sam", "ttl_hours": 168}),
        json!({"role": "viewer", "name": "Sam"}),
    ] {
        let (status, refused) = share(&server, &ida, body.clone()).await;
        assert_eq!(status, 422, "{body}: {refused}");
        assert_eq!(
            refused["error"]["code"], "ttl_beyond_own_token",
            "{refused}"
        );
        // 3 hours, or 2 once the clock has moved past the token's second.
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("ask for at most 3 hours")
                || message.contains("ask for at most 2 hours"),
            "{refused}"
        );
    }
    let (status, link) = share(
        &server,
        &ida,
        json!({"role": "responder", "name": "Sam", "ttl_hours": 2}),
    )
    .await;
    assert_eq!(status, 200, "{link}");
    let claims = server
        .keys()
        .verify(link["token"].as_str().unwrap())
        .unwrap();
    let ida_claims = server.keys().verify(&ida).unwrap();
    assert!(claims.exp <= ida_claims.exp);
    assert_eq!(claims.role, AccessRole::Responder);
    assert_eq!(claims.incident, Some(IncidentId::new(1)));
    assert_eq!(claims.lineage, vec![ida_claims.jti.clone()]);
    // Nobody shares admin access.
    let (status, _) = share(
        &server,
        &ida,
        json!({"role": "admin", "name": "x", "ttl_hours": 1}),
    )
    .await;
    assert_eq!(status, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_revokes_the_links_it_minted_and_their_sockets_close() {
    let mut server = TestServer::start();
    let ida = token_for(&server, "ida", AccessRole::Responder, 48);
    declare(&server, &ida).await;
    let (status, link) = share(&server, &ida, json!({"role": "responder", "name": "Sam"})).await;
    assert_eq!(status, 200, "{link}");
    let sam = link["token"].as_str().unwrap().to_owned();
    // Sam, now commander, mints a link of his own: a grandchild of Ida's.
    let admin = token_for(&server, "root", AccessRole::Admin, 48);
    let sam_id = link["user"].as_str().unwrap();
    let (status, body) = server
        .post_json(
            "/api/incidents/INC-1/commands/force_assign_role",
            &admin,
            &json!({"role": "incident_commander", "to": {"id": sam_id, "name": "Sam"}, "reason": "test"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, grandchild) =
        share(&server, &sam, json!({"role": "viewer", "name": "Exec"})).await;
    assert_eq!(status, 200, "{grandchild}");
    let exec = grandchild["token"].as_str().unwrap().to_owned();
    let incident = IncidentId::new(1);
    let sam_socket = YClient::connect(&server.ws_url(&incident, &sam)).await;
    let exec_socket = YClient::connect(&server.ws_url(&incident, &exec)).await;
    for token in [&sam, &exec] {
        assert_eq!(server.get_json("/api/me", token).await.0, 200);
    }

    let ida_id = server.keys().verify(&ida).unwrap().jti;
    let (status, body) = server
        .post_json(&format!("/api/tokens/{ida_id}/revoke"), &admin, &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    for socket in [&sam_socket, &exec_socket] {
        let (code, reason) = socket.wait_closed().await;
        assert_eq!(code, 4401, "{reason}");
    }
    for token in [&ida, &sam, &exec] {
        let (status, body) = server.get_json("/api/me", token).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["code"], "revoked_token");
    }
    // Still refused after a restart: the links carry their lineage.
    server.terminate();
    server.restart();
    for token in [&sam, &exec] {
        assert_eq!(server.get_json("/api/me", token).await.0, 401);
    }
    assert_eq!(server.get_json("/api/me", &admin).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_list_issued_tokens_and_revoke_everything_someone_minted() {
    let server = TestServer::start();
    let ida = token_for(&server, "ida", AccessRole::Responder, 48);
    declare(&server, &ida).await;
    let mut links = Vec::new();
    for name in ["Sam", "Tia"] {
        let (status, link) = share(&server, &ida, json!({"role": "viewer", "name": name})).await;
        assert_eq!(status, 200, "{link}");
        links.push(link["token"].as_str().unwrap().to_owned());
    }
    let admin = token_for(&server, "root", AccessRole::Admin, 48);
    let (status, tokens) = server.get_json("/api/admin/tokens", &admin).await;
    assert_eq!(status, 200, "{tokens}");
    let tokens = tokens.as_array().unwrap();
    let ida_jti = server.keys().verify(&ida).unwrap().jti;
    let ida_entry = tokens
        .iter()
        .find(|token| token["jti"] == ida_jti.as_str())
        .expect("a token minted with the secret is recorded when first used");
    assert_eq!(ida_entry["origin"], "first_use");
    assert_eq!(ida_entry["role"], "responder");
    assert!(
        tokens
            .iter()
            .any(|token| token["origin"] == "start_up" && token["sub"] == "admin"),
        "the admin token printed at start is recorded: {tokens:?}"
    );
    let (status, minted) = server
        .get_json("/api/admin/tokens?minted_by=ida", &admin)
        .await;
    assert_eq!(status, 200);
    let minted = minted.as_array().unwrap();
    assert_eq!(minted.len(), 2, "{minted:?}");
    for entry in minted {
        assert_eq!(entry["origin"], "share_link");
        assert_eq!(entry["role"], "viewer");
        assert_eq!(entry["incident"], "INC-1");
        assert_eq!(entry["minted_by"]["jti"], ida_jti.as_str());
        assert!(entry["expires_at"].is_string());
    }

    // An admin limited to the incident may not see or revoke server-wide.
    let scoped_admin = server.scoped_token(AccessRole::Admin, "Scoped", &IncidentId::new(1));
    assert_eq!(
        server.get_json("/api/admin/tokens", &scoped_admin).await.0,
        403
    );

    let (status, revoked) = server
        .post_json(
            "/api/admin/tokens/revoke",
            &admin,
            &json!({"minted_by": "ida"}),
        )
        .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked.as_array().unwrap().len(), 2, "{revoked}");
    for link in &links {
        assert_eq!(server.get_json("/api/me", link).await.0, 401);
    }
    assert_eq!(
        server.get_json("/api/me", &ida).await.0,
        200,
        "the minter's own token is not revoked by revoking what it minted"
    );
    let (status, again) = server
        .post_json(
            "/api/admin/tokens/revoke",
            &admin,
            &json!({"minted_by": "ida"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again, json!([]), "nothing left to revoke");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_subjects_and_tokens_from_the_future_are_refused() {
    let server = TestServer::start();
    for subject in ["System", "SYSTEM", " system "] {
        let token = token_for(&server, subject, AccessRole::Admin, 1);
        let (status, body) = server.get_json("/api/me", &token).await;
        assert_eq!(status, 401, "{subject:?}: {body}");
    }
    let now = chrono::Utc::now().timestamp();
    let future = |change: &dyn Fn(&mut commandpost_shared::TokenClaims)| {
        let mut claims = new_claims(
            "ada",
            "Ada",
            AccessRole::Responder,
            None,
            Duration::from_secs(7200),
        );
        change(&mut claims);
        server.keys().sign(&claims)
    };
    for token in [
        future(&|claims| claims.iat = now + 3600),
        future(&|claims| claims.nbf = Some(now + 3600)),
    ] {
        let (status, body) = server.get_json("/api/me", &token).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["code"], "token_not_yet_valid", "{body}");
    }
    let (status, _) = server
        .get_json("/api/me", &future(&|claims| claims.nbf = Some(now - 60)))
        .await;
    assert_eq!(status, 200, "a token already valid is accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_the_registry_and_revokes_what_someone_minted() {
    let server = TestServer::start();
    let ida = token_for(&server, "ida", AccessRole::Responder, 48);
    declare(&server, &ida).await;
    let (status, link) = share(&server, &ida, json!({"role": "viewer", "name": "Sam"})).await;
    assert_eq!(status, 200, "{link}");
    let sam = link["token"].as_str().unwrap().to_owned();
    let admin = token_for(&server, "root", AccessRole::Admin, 48);
    let cli = |args: &[&str]| crate::cli::ok(&server, &admin, args);
    let listed = cli(&["token", "list", "--minted-by", "ida"]);
    let sam_jti = server.keys().verify(&sam).unwrap().jti;
    assert!(listed.contains(&sam_jti), "{listed}");
    assert!(
        listed.contains("viewer") && listed.contains("INC-1") && listed.contains("share_link"),
        "{listed}"
    );
    let all = cli(&["token", "list"]);
    assert!(
        all.lines().count() >= 3,
        "ida's and root's tokens, and the link: {all}"
    );
    let revoked = cli(&["token", "revoke", "--minted-by", "ida"]);
    assert!(
        revoked.contains("revoked 1 token(s) minted by ida"),
        "{revoked}"
    );
    assert_eq!(server.get_json("/api/me", &sam).await.0, 401);
    assert_eq!(server.get_json("/api/me", &ida).await.0, 200);
}
