//! Property: random interleavings of concurrent edits from several yrs
//! clients converge through the server.

use commandpost_shared::AccessRole;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use yrs::{Text, Transact};

use crate::support::TestServer;
use crate::support::yclient::{Connect, YClient};

#[derive(Clone, Debug)]
enum Op {
    /// Insert at a fraction (per mille) of the current length.
    Insert { at: u32, text: String },
    /// Delete up to `len` characters at a fraction of the length.
    Delete { at: u32, len: u32 },
    /// Let the other clients run for a moment.
    Pause { millis: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u32..=1000, "[a-z ]{1,6}").prop_map(|(at, text)| Op::Insert { at, text }),
        2 => (0u32..=1000, 1u32..5).prop_map(|(at, len)| Op::Delete { at, len }),
        1 => (0u64..4).prop_map(|millis| Op::Pause { millis }),
    ]
}

async fn run_case(server: &TestServer, scripts: Vec<Vec<Op>>) {
    let incident = server.create_incident("Property").await;
    let url = server.ws_url(&incident, &server.token(AccessRole::Responder, "Prop"));
    let clients = futures::future::join_all(scripts.iter().map(|_| {
        YClient::connect_with(
            &url,
            Connect {
                saved_acks: true,
                client_id: None,
            },
        )
    }))
    .await;
    let runs = clients
        .iter()
        .zip(scripts)
        .map(|(client, script)| async move {
            for op in script {
                match op {
                    // Read the length and edit in one transaction: the
                    // client applies remote changes concurrently.
                    Op::Insert { at, text } => {
                        let mut txn = client.doc.transact_mut();
                        let length = client.text.len(&txn);
                        client.text.insert(&mut txn, length * at / 1000, &text);
                    }
                    Op::Delete { at, len } => {
                        let mut txn = client.doc.transact_mut();
                        let length = client.text.len(&txn);
                        if length > 0 {
                            let start = (length - 1) * at / 1000;
                            let len = len.min(length - start);
                            client.text.remove_range(&mut txn, start, len);
                        }
                    }
                    Op::Pause { millis } => {
                        tokio::time::sleep(std::time::Duration::from_millis(millis)).await
                    }
                }
                tokio::task::yield_now().await;
            }
            // Everything this client sent is applied and stored.
            client.wait_saved().await;
        });
    futures::future::join_all(runs).await;
    let server_text = YClient::connect(&url).await.read();
    for client in &clients {
        client.wait_text(&server_text).await;
    }
}

#[test]
fn random_interleavings_of_concurrent_edits_converge_through_the_server() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = TestServer::start();
    let mut runner = TestRunner::new(Config {
        cases: 12,
        failure_persistence: None,
        ..Config::default()
    });
    let scripts = proptest::collection::vec(proptest::collection::vec(op(), 1..40), 2..5);
    runner
        .run(&scripts, |scripts| {
            runtime.block_on(run_case(&server, scripts));
            Ok(())
        })
        .unwrap();
}
