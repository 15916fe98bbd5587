//! Unit tests of the sans-IO protocol core: no server, no sockets.

use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

use std::time::Duration;

use commandpost_shared::UserId;

use super::*;

fn room_with(text: &str) -> Awareness {
    let doc = Doc::new();
    let body = doc.get_or_insert_text("body");
    body.insert(&mut doc.transact_mut(), 0, text);
    Awareness::new(doc)
}

fn body(awareness: &Awareness) -> String {
    let text = awareness.doc().get_or_insert_text("body");
    text.get_string(&awareness.doc().transact())
}

/// Another peer holding everything `base` holds.
fn peer_of(base: &Awareness) -> Doc {
    let peer = Doc::new();
    let state = base
        .doc()
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    peer.transact_mut()
        .apply_update(Update::decode_v1(&state).unwrap())
        .unwrap();
    peer
}

/// An update made by another peer that appends `suffix` to `base`'s body.
fn remote_edit(base: &Awareness, suffix: &str) -> Vec<u8> {
    let peer = peer_of(base);
    let before = peer.transact().state_vector();
    let text = peer.get_or_insert_text("body");
    text.push(&mut peer.transact_mut(), suffix);
    peer.transact().encode_diff_v1(&before)
}

fn update_frame(update: &[u8]) -> Vec<u8> {
    Message::Sync(SyncMessage::Update(update.to_vec())).encode_v1()
}

#[test]
fn frames_with_several_messages_decode_in_order() {
    let room = room_with("hi");
    let update = remote_edit(&room, "!");
    let mut frame = update_frame(&update);
    frame.extend(Message::AwarenessQuery.encode_v1());
    frame.extend([MSG_SAVED, 0]);
    let messages = decode_frame(&frame).unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[0], ClientMessage::Update(&update));
    assert_eq!(messages[1], ClientMessage::QueryAwareness);
    assert_eq!(messages[2], ClientMessage::SavedOptIn);
}

#[test]
fn malformed_frames_name_what_is_wrong() {
    let cases: Vec<(Vec<u8>, ProtocolError)> = vec![
        (vec![], ProtocolError::EmptyFrame),
        (vec![0x80], ProtocolError::TruncatedVarint { offset: 0 }),
        (vec![0, 0x80], ProtocolError::TruncatedVarint { offset: 1 }),
        (vec![0xff; 11], ProtocolError::OverlongVarint { offset: 0 }),
        (
            vec![0, 2, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3],
            ProtocolError::LengthBeyondFrame {
                offset: 2,
                declared: 0xffff_ffff,
                remaining: 3,
            },
        ),
        (vec![7], ProtocolError::UnknownMessageType(7)),
        (vec![0, 9, 0], ProtocolError::UnknownSyncType(9)),
        // A state vector that claims four billion entries in three bytes.
        (
            vec![0, 0, 6, 0xff, 0xff, 0xff, 0xff, 0x0f, 1],
            ProtocolError::InvalidStateVector,
        ),
    ];
    for (frame, expected) in cases {
        assert_eq!(
            decode_frame(&frame),
            Err(expected.clone()),
            "frame {frame:?}"
        );
        assert_eq!(expected.close_code(), close_code::MALFORMED);
    }
    // Awareness: an absurd client count, invalid UTF-8, non-JSON state, and
    // (found by the `session` fuzz target) a clock at u32::MAX, which yrs
    // would overflow when the client leaves, and a state two below it, whose
    // removal on leave the server would send at u32::MAX.
    for payload in [
        vec![0xff, 0xff, 0xff, 0xff, 0x0f],
        vec![1, 5, 1, 2, 0xc3, 0x28],
        vec![1, 5, 1, 3, b'n', b'o', b'!'],
        vec![1, 5, 0xff, 0xff, 0xff, 0xff, 0x0f, 2, b'{', b'}'],
        vec![1, 5, 0xfe, 0xff, 0xff, 0xff, 0x0f, 2, b'{', b'}'],
    ] {
        let mut frame = vec![1, payload.len() as u8];
        frame.extend(&payload);
        assert!(
            matches!(
                decode_frame(&frame),
                Err(ProtocolError::InvalidAwareness(_))
            ),
            "payload {payload:?}"
        );
    }
}

#[test]
fn a_frame_with_one_bad_message_yields_nothing() {
    let room = room_with("hi");
    let mut frame = update_frame(&remote_edit(&room, "!"));
    frame.push(0x80);
    assert!(decode_frame(&frame).is_err());
}

#[test]
fn editors_updates_are_applied_relayed_and_persisted_with_change_numbers() {
    let room = room_with("hello");
    let mut session = Session::new(Access::ReadWrite);
    let update = remote_edit(&room, " world");
    let effects = session
        .handle(&room, ClientMessage::Update(&update))
        .unwrap();
    assert_eq!(
        effects,
        vec![Effect::Commit {
            update: update.clone(),
            change: 1
        }]
    );
    assert_eq!(body(&room), "hello world");

    // The same update again changes nothing: acknowledged, not stored again.
    let effects = session
        .handle(&room, ClientMessage::SyncStep2(&update))
        .unwrap();
    assert_eq!(effects, vec![Effect::AckWhenDurable { change: 2 }]);
    // An empty update (what a client with nothing new sends) likewise.
    let effects = session
        .handle(&room, ClientMessage::SyncStep2(&[0, 0]))
        .unwrap();
    assert_eq!(effects, vec![Effect::AckWhenDurable { change: 3 }]);
}

#[test]
fn viewers_are_denied_and_the_document_does_not_change() {
    let room = room_with("hello");
    let mut viewer = Session::new(Access::ReadOnly);
    let update = remote_edit(&room, " from a viewer");
    let effects = viewer
        .handle(&room, ClientMessage::Update(&update))
        .unwrap();
    let denial = encode(&Message::Auth(Some(VIEWER_DENIED_REASON.into())));
    assert_eq!(effects, vec![Effect::Reply(denial), Effect::Denied]);
    assert_eq!(body(&room), "hello");
    // Sync step 2 is refused the same way; an empty one is simply ignored.
    assert_eq!(
        viewer
            .handle(&room, ClientMessage::SyncStep2(&update))
            .unwrap()
            .len(),
        2
    );
    assert!(
        viewer
            .handle(&room, ClientMessage::SyncStep2(&[0, 0]))
            .unwrap()
            .is_empty()
    );
    assert_eq!(body(&room), "hello");
}

#[test]
fn sync_step_1_is_answered_with_the_missing_part_for_viewers_and_editors() {
    let room = room_with("hello");
    for access in [Access::ReadOnly, Access::ReadWrite] {
        let mut session = Session::new(access);
        let effects = session
            .handle(&room, ClientMessage::SyncStep1(StateVector::default()))
            .unwrap();
        let [Effect::Reply(bytes)] = effects.as_slice() else {
            panic!("expected one reply, got {effects:?}");
        };
        let Message::Sync(SyncMessage::SyncStep2(update)) = Message::decode_v1(bytes).unwrap()
        else {
            panic!("expected sync step 2");
        };
        let client = Doc::new();
        client
            .transact_mut()
            .apply_update(Update::decode_v1(&update).unwrap())
            .unwrap();
        let text = client.get_or_insert_text("body");
        assert_eq!(text.get_string(&client.transact()), "hello");
    }
}

#[test]
fn updates_yrs_refuses_are_rejected_and_leave_the_document_alone() {
    let room = room_with("hello");
    let mut session = Session::new(Access::ReadWrite);
    // Claims one client with one block whose content reference is invalid.
    let garbage = [1, 1, 5, 0, 0xff, 0xff, 0xff];
    let error = session
        .handle(&room, ClientMessage::Update(&garbage))
        .unwrap_err();
    assert!(
        matches!(error, ProtocolError::UpdateRejected(_)),
        "{error:?}"
    );
    assert_eq!(error.close_code(), close_code::UPDATE_REJECTED);
    assert_eq!(body(&room), "hello");
}

fn only_awareness(frame: &[u8]) -> AwarenessUpdate {
    match decode_frame(frame).unwrap().pop() {
        Some(ClientMessage::Awareness(update)) => update,
        other => panic!("expected one awareness message, got {other:?}"),
    }
}

#[test]
fn awareness_is_tracked_relayed_and_removed_on_leave_but_ignored_from_viewers() {
    let room = room_with("");
    let state = r#"{"user":{"name":"Ada"}}"#;
    let mut frame = Vec::new();
    let mut clients = std::collections::HashMap::new();
    clients.insert(
        ClientID::new(77),
        AwarenessUpdateEntry {
            clock: 1,
            json: state.into(),
        },
    );
    let update = AwarenessUpdate { clients };
    frame.extend(Message::Awareness(update.clone()).encode_v1());

    let mut viewer = Session::new(Access::ReadOnly);
    let decoded = only_awareness(&frame);
    assert!(
        viewer
            .handle(&room, ClientMessage::Awareness(decoded))
            .unwrap()
            .is_empty()
    );
    assert!(room.state::<serde_json::Value>(ClientID::new(77)).is_none());

    let mut editor = Session::new(Access::ReadWrite);
    let decoded = only_awareness(&frame);
    let effects = editor
        .handle(&room, ClientMessage::Awareness(decoded))
        .unwrap();
    assert_eq!(
        effects,
        vec![Effect::BroadcastAll(encode(&Message::Awareness(update)))]
    );
    assert_eq!(
        room.state::<serde_json::Value>(ClientID::new(77)).unwrap()["user"]["name"],
        "Ada"
    );
    // A query is answered with the known states.
    let effects = editor.handle(&room, ClientMessage::QueryAwareness).unwrap();
    assert_eq!(effects.len(), 1);

    // Leaving removes the state and produces the message telling the others.
    let goodbye = editor.leave(&room).expect("a removal message");
    assert!(room.state::<serde_json::Value>(ClientID::new(77)).is_none());
    let Message::Awareness(removal) = Message::decode_v1(&goodbye).unwrap() else {
        panic!("expected an awareness message");
    };
    assert_eq!(removal.clients[&ClientID::new(77)].json.as_ref(), "null");
    assert!(editor.leave(&room).is_none(), "nothing left to remove");
}

/// Found by the session fuzz target: a removal with a stale clock is
/// ignored by yrs, so the connection must still remove the state it set
/// when it leaves (it used to forget it and leave a ghost cursor behind).
#[test]
fn a_stale_removal_does_not_outlive_the_connection() {
    let room = room_with("");
    let client = ClientID::new(500);
    let mut editor = Session::new(Access::ReadWrite);
    // Clock 5 sets a state; clock 3 removes it, but is stale.
    let frames: [&[u8]; 2] = [
        b"\x01\x0c\x01\xf4\x03\x05\x07{\"a\":1}",
        b"\x01\x09\x01\xf4\x03\x03\x04null",
    ];
    for frame in frames {
        let decoded = only_awareness(frame);
        assert!(decoded.clients.contains_key(&client));
        editor
            .handle(&room, ClientMessage::Awareness(decoded))
            .unwrap();
    }
    assert_eq!(
        room.state::<serde_json::Value>(client).unwrap()["a"],
        1,
        "yrs ignores the stale removal"
    );
    let goodbye = editor.leave(&room).expect("a removal message");
    assert!(room.state::<serde_json::Value>(client).is_none());
    let Message::Awareness(removal) = Message::decode_v1(&goodbye).unwrap() else {
        panic!("expected an awareness message");
    };
    assert_eq!(removal.clients[&client].json.as_ref(), "null");

    // A stale state for a client another connection owns is not claimed.
    let mut owner = Session::new(Access::ReadWrite);
    let mut other = Session::new(Access::ReadWrite);
    let set = |clock: u32| {
        let mut clients = std::collections::HashMap::new();
        clients.insert(
            ClientID::new(9),
            AwarenessUpdateEntry {
                clock,
                json: r#"{"b":2}"#.into(),
            },
        );
        ClientMessage::Awareness(AwarenessUpdate { clients })
    };
    owner.handle(&room, set(4)).unwrap();
    other.handle(&room, set(2)).unwrap();
    assert!(
        other.leave(&room).is_none(),
        "the stale sender owns nothing"
    );
    assert!(room.state::<serde_json::Value>(ClientID::new(9)).is_some());
    assert!(owner.leave(&room).is_some());
    assert!(room.state::<serde_json::Value>(ClientID::new(9)).is_none());
}

#[test]
fn saved_acknowledgements_decode_as_yrs_custom_messages() {
    for n in [0u64, 1, 127, 128, 300, u64::from(u32::MAX) + 5] {
        let bytes = encode_saved(n);
        let Message::Custom(tag, payload) = Message::decode_v1(&bytes).unwrap() else {
            panic!("expected a custom message");
        };
        assert_eq!(tag, MSG_SAVED);
        let mut reader = FrameReader {
            buf: &payload,
            pos: 0,
        };
        assert_eq!(reader.varuint().unwrap(), n);
    }
}

fn caller(name: &str) -> Actor {
    Actor {
        id: UserId(name.to_lowercase()),
        name: name.to_owned(),
    }
}

fn responder(name: &str, awareness_per_second: u32) -> Session {
    Session::for_caller(
        Access::ReadWrite,
        caller(name),
        SessionLimits {
            awareness_per_second,
        },
    )
}

/// An awareness message setting each `(client, clock, json)`.
fn awareness_of(entries: &[(u64, u32, &str)]) -> ClientMessage<'static> {
    let clients = entries
        .iter()
        .map(|(client, clock, json)| {
            (
                ClientID::new(*client),
                AwarenessUpdateEntry {
                    clock: *clock,
                    json: (*json).into(),
                },
            )
        })
        .collect();
    ClientMessage::Awareness(AwarenessUpdate { clients })
}

fn state_of(room: &Awareness, client: u64) -> Option<serde_json::Value> {
    room.state::<serde_json::Value>(ClientID::new(client))
}

#[test]
fn awareness_names_come_from_the_token_and_colours_from_the_client() {
    let room = room_with("");
    let mut mallory = responder("Mallory", 0);
    let effects = mallory
        .handle(
            &room,
            awareness_of(&[(
                5,
                1,
                r##"{"user":{"name":"Ada","color":"#c33"},"cursor":3}"##,
            )]),
        )
        .unwrap();
    let state = state_of(&room, 5).unwrap();
    assert_eq!(state["user"]["name"], "Mallory");
    assert_eq!(state["user"]["id"], "mallory");
    assert_eq!(state["user"]["color"], "#c33");
    assert_eq!(state["cursor"], 3);
    // What is relayed is what is stored.
    let [Effect::BroadcastAll(frame)] = effects.as_slice() else {
        panic!("expected one relay, got {effects:?}");
    };
    let relayed = only_awareness(frame);
    assert!(relayed.clients[&ClientID::new(5)].json.contains("Mallory"));
    // A state without a user gets one; a state that is not an object is
    // refused whole.
    mallory
        .handle(&room, awareness_of(&[(5, 2, r#"{"user":"Ada"}"#)]))
        .unwrap();
    assert_eq!(state_of(&room, 5).unwrap()["user"]["name"], "Mallory");
    let error = mallory
        .handle(&room, awareness_of(&[(5, 3, "42")]))
        .unwrap_err();
    assert!(
        matches!(error, ProtocolError::AwarenessRefused(_)),
        "{error}"
    );
    assert_eq!(error.close_code(), close_code::MALFORMED);
}

#[test]
fn a_connection_cannot_set_or_remove_another_connections_awareness() {
    let room = room_with("");
    let mut vera = responder("Vera", 0);
    let mut mallory = responder("Mallory", 0);
    vera.handle(
        &room,
        awareness_of(&[(1, 1, r#"{"user":{"name":"Vera"}}"#)]),
    )
    .unwrap();
    // Setting Vera's client id, then removing it: both dropped, reported,
    // relayed to nobody.
    for (clock, json) in [(2, r#"{"user":{"name":"IMPOSTOR"}}"#), (3, "null")] {
        let effects = mallory
            .handle(&room, awareness_of(&[(1, clock, json)]))
            .unwrap();
        assert!(effects.is_empty(), "{effects:?}");
    }
    assert_eq!(
        mallory.take_refusals(),
        vec![
            AwarenessRefusal::Foreign { client: 1 },
            AwarenessRefusal::ForeignRemoval { client: 1 }
        ]
    );
    assert_eq!(state_of(&room, 1).unwrap()["user"]["name"], "Vera");
    // An echo of Vera's state (what stock clients send back) is stale:
    // skipped without a report. The rest of a message still applies.
    let effects = mallory
        .handle(
            &room,
            awareness_of(&[(1, 1, r#"{"user":{"name":"Vera"}}"#), (2, 1, "{}")]),
        )
        .unwrap();
    assert_eq!(effects.len(), 1);
    assert!(mallory.take_refusals().is_empty());
    assert!(mallory.leave(&room).is_some());
    assert!(state_of(&room, 1).is_some(), "Mallory's leave keeps Vera's");
    assert!(state_of(&room, 2).is_none());

    // The same user on a new connection (a reconnecting tab) takes its
    // client id over; the old connection's leave then removes nothing.
    let mut vera_again = responder("Vera", 0);
    vera_again
        .handle(
            &room,
            awareness_of(&[(1, 2, r#"{"user":{"name":"Vera"}}"#)]),
        )
        .unwrap();
    assert!(vera.leave(&room).is_none());
    assert!(state_of(&room, 1).is_some());
    assert!(vera_again.leave(&room).is_some());
    assert!(state_of(&room, 1).is_none());
}

#[test]
fn awareness_beyond_its_limits_is_refused_whole() {
    let room = room_with("");
    let mut flood = responder("Flood", 0);
    let many: Vec<(u64, u32, &str)> = (0..=MAX_AWARENESS_CLIENTS as u64)
        .map(|client| (100 + client, 1, "{}"))
        .collect();
    let error = flood.handle(&room, awareness_of(&many)).unwrap_err();
    assert!(error.to_string().contains("client ids"), "{error}");
    assert!(state_of(&room, 100).is_none(), "nothing of it applies");
    // One at a time, the same: the count is per connection, removals
    // included.
    for (client, _, _) in &many[..MAX_AWARENESS_CLIENTS] {
        flood
            .handle(&room, awareness_of(&[(*client, 1, "{}")]))
            .unwrap();
        flood
            .handle(&room, awareness_of(&[(*client, 2, "null")]))
            .unwrap();
    }
    let last = many[MAX_AWARENESS_CLIENTS].0;
    assert!(
        flood
            .handle(&room, awareness_of(&[(last, 1, "{}")]))
            .is_err()
    );

    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(MAX_AWARENESS_STATE_BYTES));
    let error = responder("Big", 0)
        .handle(&room, awareness_of(&[(7, 1, &big)]))
        .unwrap_err();
    assert!(error.to_string().contains("bytes"), "{error}");
    assert!(state_of(&room, 7).is_none());
}

#[test]
fn awareness_beyond_the_relay_rate_is_coalesced_to_the_latest_state() {
    let room = room_with("");
    let mut typist = responder("Ty", 2);
    let second = Duration::from_secs(1);
    let mut relayed = 0;
    for clock in 1..=10u32 {
        let json = format!(r#"{{"cursor":{clock}}}"#);
        let effects = typist
            .handle_at(&room, awareness_of(&[(9, clock, &json)]), Duration::ZERO)
            .unwrap();
        relayed += effects.len();
    }
    assert_eq!(relayed, 2, "the burst goes out, the rest waits");
    // Stored at once (joiners see the latest), relayed once the rate allows.
    assert_eq!(state_of(&room, 9).unwrap()["cursor"], 10);
    let due = typist.awareness_due().expect("something waits");
    assert!(due > Duration::ZERO && due <= second, "{due:?}");
    assert!(typist.flush_awareness(&room, Duration::ZERO).is_none());
    let frame = typist
        .flush_awareness(&room, due)
        .expect("relayed when due");
    let update = only_awareness(&frame);
    assert!(
        update.clients[&ClientID::new(9)]
            .json
            .contains(r#""cursor":10"#)
    );
    assert_eq!(update.clients[&ClientID::new(9)].clock, 10);
    assert!(typist.awareness_due().is_none());
}

#[test]
fn token_buckets_allow_a_burst_then_charge_debt_as_waiting_time() {
    let mut bucket = TokenBucket::new(100.0, 200.0);
    let start = Duration::from_secs(5);
    bucket.charge(200.0, start);
    assert_eq!(bucket.wait_for(0.0, start), Duration::ZERO);
    bucket.charge(50.0, start);
    assert_eq!(bucket.wait_for(0.0, start), Duration::from_millis(500));
    assert_eq!(
        bucket.wait_for(0.0, start + Duration::from_millis(500)),
        Duration::ZERO
    );
    let mut off = TokenBucket::new(0.0, 0.0);
    off.charge(1e12, start);
    assert_eq!(off.wait_for(0.0, start), Duration::ZERO);
    assert!(off.try_take(1.0, start));
}

/// Found by the session fuzz target: at the instant `wait_for` named, the
/// floating-point refill could leave the bucket a hair short, so the relay
/// timer found nothing to send and was armed for the same instant again.
#[test]
fn a_bucket_holds_the_amount_at_the_instant_it_said_it_would() {
    for per_second in [1.0, 3.0, 7.0, 20.0, 30.0, 1000.0] {
        let mut bucket = TokenBucket::new(per_second, per_second);
        let mut now = Duration::from_micros(1_012);
        for step in 0..2_000u64 {
            // Empty it at an irregular time, then wait exactly as told.
            while bucket.try_take(1.0, now) {}
            let wait = bucket.wait_for(1.0, now);
            assert!(wait > Duration::ZERO);
            now += wait;
            assert!(
                bucket.try_take(1.0, now),
                "{per_second}/s, step {step}: not there at {now:?}"
            );
            now += Duration::from_nanos(step * 7_919 % 1_000_003);
        }
    }
}

#[test]
fn updates_that_only_delete_are_recognised() {
    let room = room_with("hello world");
    let peer = peer_of(&room);
    let text = peer.get_or_insert_text("body");
    let before = peer.transact().state_vector();
    text.remove_range(&mut peer.transact_mut(), 0, 6);
    let deletion = peer.transact().encode_diff_v1(&before);
    assert_eq!(only_deletes(&deletion), Ok(true));
    assert_eq!(only_deletes(&remote_edit(&room, "!")), Ok(false));
    let mut session = Session::new(Access::ReadWrite);
    session
        .handle(&room, ClientMessage::Update(&deletion))
        .unwrap();
    assert!(session.last_commit_deleted());
    assert_eq!(body(&room), "world");
}

/// A removal held back by the relay rate still reaches the others when the
/// connection closes right after it (a tab closing).
#[test]
fn leaving_relays_a_removal_still_held_back() {
    let room = room_with("");
    let mut tab = responder("Tab", 1);
    let start = Duration::ZERO;
    assert_eq!(
        tab.handle_at(&room, awareness_of(&[(3, 1, "{}")]), start)
            .unwrap()
            .len(),
        1
    );
    assert!(
        tab.handle_at(&room, awareness_of(&[(3, 2, "null")]), start)
            .unwrap()
            .is_empty(),
        "held back"
    );
    assert!(state_of(&room, 3).is_none());
    let goodbye = tab.leave(&room).expect("the held-back removal");
    let Message::Awareness(update) = Message::decode_v1(&goodbye).unwrap() else {
        panic!("expected an awareness message");
    };
    assert_eq!(update.clients[&ClientID::new(3)].json.as_ref(), "null");
}

#[test]
fn an_update_deleting_items_nobody_has_is_refused_and_known_deletions_pass() {
    let room = room_with("hi");
    let typist = Doc::with_client_id(42);
    let text = typist.get_or_insert_text("notes");
    text.insert(&mut typist.transact_mut(), 0, "abc");
    let typed = typist
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let mut editor = Session::new(Access::ReadWrite);
    let effects = editor.handle(&room, ClientMessage::Update(&typed)).unwrap();
    assert!(
        matches!(effects[..], [Effect::Commit { .. }]),
        "{effects:?}"
    );
    // No blocks; deletes 42#0..10, but client 42 has only clocks 0..3.
    let beyond = [0x00, 0x01, 42, 0x01, 0x00, 10];
    let error = editor
        .handle(&room, ClientMessage::Update(&beyond))
        .unwrap_err();
    assert!(error.leaves_document_suspect(), "{error}");
    // Deleting what the document has is an ordinary edit.
    let room = room_with("hi");
    editor.handle(&room, ClientMessage::Update(&typed)).unwrap();
    let known = [0x00, 0x01, 42, 0x01, 0x00, 2];
    let effects = editor.handle(&room, ClientMessage::Update(&known)).unwrap();
    assert!(
        matches!(effects[..], [Effect::Commit { .. }]),
        "{effects:?}"
    );
}

#[test]
fn the_highest_state_clock_still_leaves_a_removal_the_server_accepts() {
    let frame = |clock: u32, state: &[u8]| {
        let mut payload = vec![1, 5];
        let mut n = clock;
        while n >= 0x80 {
            payload.push((n & 0x7f) as u8 | 0x80);
            n >>= 7;
        }
        payload.push(n as u8);
        payload.push(state.len() as u8);
        payload.extend(state);
        let mut frame = vec![1, payload.len() as u8];
        frame.extend(payload);
        frame
    };
    let highest = MAX_AWARENESS_STATE_CLOCK;
    assert!(decode_frame(&frame(highest, b"{}")).is_ok());
    assert!(decode_frame(&frame(highest + 1, b"{}")).is_err());
    // The removal of the highest state, as the server sends it on leave.
    assert!(decode_frame(&frame(highest + 1, b"null")).is_ok());
    assert!(decode_frame(&frame(u32::MAX, b"null")).is_err());
}
