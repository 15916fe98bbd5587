//! `protocol::decode_frame` on arbitrary bytes: one binary WebSocket frame
//! as a client could send it.
//!
//! Must never panic, and must keep its contract:
//! - an accepted frame has at least one message, its payloads borrow from the
//!   frame, and the canonical re-encoding of its messages decodes to the same
//!   messages (also cut at every message boundary);
//! - decoding is all-or-nothing and compositional: a frame twice over is its
//!   messages twice over; an accepted frame followed by a bad message, or a
//!   refused frame preceded by a good one, is refused (with the same error,
//!   its offsets shifted by the good message's length);
//! - every refusal is a "malformed" close code, never one that reloads the
//!   document, and its offsets point inside the frame (or at its end, for a
//!   varint that is missing altogether).

#![no_main]

use commandpost::protocol::{ClientMessage, ProtocolError, close_code, decode_frame};
use libfuzzer_sys::fuzz_target;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::encoder::Encode;

/// A complete, valid one-byte message: query awareness.
const QUERY_AWARENESS: u8 = 3;
/// An outer message type that does not exist.
const UNKNOWN_TYPE: u8 = 7;
/// The O(n²) boundary check runs only for frames with at most this many
/// messages.
const MAX_BOUNDARY_CHECKS: usize = 16;

fuzz_target!(|frame: &[u8]| {
    match decode_frame(frame) {
        Ok(messages) => accepted(frame, &messages),
        Err(error) => refused(frame, &error),
    }
});

fn accepted(frame: &[u8], messages: &[ClientMessage<'_>]) {
    assert!(!messages.is_empty(), "a non-empty frame yields a message");

    // Payloads borrow from the frame.
    let range = frame.as_ptr_range();
    for message in messages {
        if let ClientMessage::SyncStep2(payload) | ClientMessage::Update(payload) = message {
            let inner = payload.as_ptr_range();
            assert!(
                range.start <= inner.start && inner.end <= range.end,
                "a payload does not point into its frame"
            );
        }
    }

    // The same frame twice over: the same messages twice over.
    let doubled = [frame, frame].concat();
    let twice = decode_frame(&doubled).expect("a frame twice over decodes");
    assert_eq!(twice.len(), 2 * messages.len());
    assert!(twice[..messages.len()] == *messages && twice[messages.len()..] == *messages);

    // A bad message after good ones spoils the whole frame.
    let spoiled = [frame, &[UNKNOWN_TYPE]].concat();
    assert_eq!(
        decode_frame(&spoiled),
        Err(ProtocolError::UnknownMessageType(u64::from(UNKNOWN_TYPE)))
    );

    // The canonical encoding of the messages decodes to the same messages,
    // and so does every prefix of it that ends at a message boundary.
    let encoded: Vec<Vec<u8>> = messages.iter().map(encode).collect();
    let canonical = encoded.concat();
    assert_eq!(decode_frame(&canonical).as_deref(), Ok(messages));
    if messages.len() <= MAX_BOUNDARY_CHECKS {
        let mut end = 0;
        for (count, part) in encoded.iter().enumerate().take(messages.len() - 1) {
            end += part.len();
            assert_eq!(
                decode_frame(&canonical[..end]).as_deref(),
                Ok(&messages[..=count])
            );
        }
    }
}

/// The canonical encoding of one message. `Auth` and `SavedOptIn` do not
/// keep their payload, so they are re-encoded as some valid message of their
/// kind.
fn encode(message: &ClientMessage<'_>) -> Vec<u8> {
    match message {
        ClientMessage::SyncStep1(sv) => Message::Sync(SyncMessage::SyncStep1(sv.clone())).encode_v1(),
        ClientMessage::SyncStep2(update) => {
            Message::Sync(SyncMessage::SyncStep2(update.to_vec())).encode_v1()
        }
        ClientMessage::Update(update) => {
            Message::Sync(SyncMessage::Update(update.to_vec())).encode_v1()
        }
        ClientMessage::Awareness(update) => Message::Awareness(update.clone()).encode_v1(),
        ClientMessage::QueryAwareness => vec![QUERY_AWARENESS],
        // Permission type 1 ("permission granted") carries no reason.
        ClientMessage::Auth => vec![2, 1],
        ClientMessage::SavedOptIn => vec![commandpost_shared::wire::MSG_SAVED, 0],
    }
}

fn refused(frame: &[u8], error: &ProtocolError) {
    assert_eq!(error.close_code(), close_code::MALFORMED, "{error:?}");
    assert!(!error.leaves_document_suspect());
    assert!(!error.to_string().is_empty());
    match *error {
        ProtocolError::EmptyFrame => {
            assert!(frame.is_empty());
            return;
        }
        // Where the varint starts: the end of the frame when it is missing.
        ProtocolError::TruncatedVarint { offset } => {
            assert!(offset <= frame.len(), "{error:?} for {} bytes", frame.len());
        }
        ProtocolError::OverlongVarint { offset } => {
            assert!(offset < frame.len(), "{error:?} for {} bytes", frame.len());
        }
        ProtocolError::LengthBeyondFrame {
            offset,
            declared,
            remaining,
        } => {
            assert!(offset < frame.len(), "{error:?} for {} bytes", frame.len());
            assert!(remaining < frame.len() - offset, "{error:?}");
            assert!(declared > remaining as u64, "{error:?}");
        }
        _ => {}
    }
    // A good message before a bad frame does not make it any better, and the
    // error names the same place, one byte later.
    let prefixed = [&[QUERY_AWARENESS], frame].concat();
    assert_eq!(decode_frame(&prefixed), Err(shifted(error, 1)));
}

fn shifted(error: &ProtocolError, by: usize) -> ProtocolError {
    match error.clone() {
        ProtocolError::TruncatedVarint { offset } => ProtocolError::TruncatedVarint {
            offset: offset + by,
        },
        ProtocolError::OverlongVarint { offset } => ProtocolError::OverlongVarint {
            offset: offset + by,
        },
        ProtocolError::LengthBeyondFrame {
            offset,
            declared,
            remaining,
        } => ProtocolError::LengthBeyondFrame {
            offset: offset + by,
            declared,
            remaining,
        },
        other => other,
    }
}
