//! Fuzz target `request`: what a client can put on a Kafka connection, from the size prefix down
//! to every field of every request body the codec implements.
//!
//! The first input byte picks a mode; the rest is interpreted by it:
//! - 0: one raw request frame (no size prefix) through `decode_request`: header, then the body
//!   of whatever api key and version the header names.
//! - 1: the input chooses an (api key, version) the codec implements and supplies the body, so
//!   every message decoder is reached without the fuzzer having to guess a header first.
//! - 2: the same for response bodies (what the command line and the bench decode from a broker).
//! - 3: a byte stream through the server's `FrameReader`, delivered in chunks whose sizes the
//!   input chooses; every frame it yields goes through mode 0.
//!
//! Properties checked beyond "no panic":
//! - anything that decodes re-encodes to bytes that decode to the same value, consuming exactly
//!   those bytes, and re-encode to the same bytes again (the codec is a bijection on its image);
//! - a decoded header re-encodes and decodes to itself, and a whole request frame round-trips
//!   through `encode_request`/`decode_request`;
//! - the consumer-protocol bytes inside JoinGroup/SyncGroup round-trip when they decode;
//! - the frame reader yields exactly the input's frames, in order, each within the size bounds,
//!   and fails only on a size prefix out of bounds or a stream that ends inside a frame.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_lite::AsyncRead;
use libfuzzer_sys::fuzz_target;
use odradek::protocol::api::SUPPORTED;
use odradek::protocol::consumer_protocol::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription,
};
use odradek::protocol::{
    decode_request, encode_request, ApiKey, Reader, RequestBody, RequestHeader, ResponseBody,
    Writer,
};
use odradek::server::framing::{FrameError, FrameReader, ReceiveInto, MIN_FRAME};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => raw_frame(rest),
        1 => chosen_request(rest),
        2 => chosen_response(rest),
        _ => frame_stream(rest),
    }
});

/// An (api, version) the codec implements, chosen by two input bytes. One value in eight of the
/// version byte is taken raw instead, so out-of-range versions are tried too.
fn choose(sel: &[u8]) -> Option<(ApiKey, i16)> {
    let (&api, &ver) = (sel.first()?, sel.get(1)?);
    let (key, lo, hi) = SUPPORTED[api as usize % SUPPORTED.len()];
    let version = if ver & 0xe0 == 0xe0 {
        i16::from(ver as i8)
    } else {
        lo + (i16::from(ver) % (hi - lo + 1))
    };
    Some((key, version))
}

fn raw_frame(frame: &[u8]) {
    let Ok((header, body)) = decode_request(Bytes::copy_from_slice(frame)) else {
        return;
    };
    check_header(&header);
    if let Ok(body) = body {
        assert_eq!(header.api_key(), Some(body.api_key()));
        check_request(&header, &body);
    }
}

fn chosen_request(rest: &[u8]) {
    let Some((key, version)) = choose(rest) else {
        return;
    };
    let body_bytes = Bytes::copy_from_slice(&rest[2..]);
    let mut r = Reader::new(body_bytes.clone());
    let Ok(body) = RequestBody::decode(key, version, &mut r) else {
        return;
    };
    assert_eq!(body.api_key(), key);
    assert!(r.position() <= body_bytes.len());
    let header = RequestHeader {
        request_api_key: key as i16,
        request_api_version: version,
        correlation_id: 7,
        client_id: Some("fuzz".into()),
    };
    check_request(&header, &body);
}

fn chosen_response(rest: &[u8]) {
    let Some((key, version)) = choose(rest) else {
        return;
    };
    let mut r = Reader::new(Bytes::copy_from_slice(&rest[2..]));
    let Ok(body) = ResponseBody::decode(key, version, &mut r) else {
        return;
    };
    assert_eq!(body.api_key(), key);
    let mut w = Writer::new();
    body.encode(&mut w, version);
    let encoded = w.into_vec();
    let mut r = Reader::new(Bytes::from(encoded.clone()));
    let again = ResponseBody::decode(key, version, &mut r).unwrap_or_else(|e| {
        panic!("{key:?} v{version} response does not decode its own encoding: {e}")
    });
    assert_eq!(
        r.remaining(),
        0,
        "{key:?} v{version} response: bytes left over"
    );
    assert_eq!(
        again, body,
        "{key:?} v{version} response changed in a round trip"
    );
    let mut w = Writer::new();
    again.encode(&mut w, version);
    assert_eq!(
        w.into_vec(),
        encoded,
        "{key:?} v{version} response: encoding not stable"
    );
}

fn check_header(header: &RequestHeader) {
    let mut w = Writer::new();
    header.encode(&mut w);
    let mut r = Reader::new(Bytes::from(w.into_vec()));
    let again = RequestHeader::decode(&mut r).expect("an encoded header decodes");
    assert_eq!(&again, header);
    assert_eq!(r.remaining(), 0);
}

fn check_request(header: &RequestHeader, body: &RequestBody) {
    let key = body.api_key();
    let version = header.request_api_version;
    let mut w = Writer::new();
    body.encode(&mut w, version);
    let encoded = w.into_vec();
    let mut r = Reader::new(Bytes::from(encoded.clone()));
    let again = RequestBody::decode(key, version, &mut r).unwrap_or_else(|e| {
        panic!("{key:?} v{version} request does not decode its own encoding: {e}")
    });
    assert_eq!(
        r.remaining(),
        0,
        "{key:?} v{version} request: bytes left over"
    );
    assert_eq!(
        &again, body,
        "{key:?} v{version} request changed in a round trip"
    );
    let mut w = Writer::new();
    again.encode(&mut w, version);
    assert_eq!(
        w.into_vec(),
        encoded,
        "{key:?} v{version} request: encoding not stable"
    );

    // The whole frame, header included.
    let mut w = Writer::new();
    encode_request(&mut w, header, body);
    let (h, b) = decode_request(Bytes::from(w.into_vec())).expect("an encoded frame decodes");
    assert_eq!(&h, header);
    assert_eq!(b.as_ref(), Ok(body));

    check_embedded(body);
}

/// The consumer-protocol bytes carried inside JoinGroup and SyncGroup requests.
fn check_embedded(body: &RequestBody) {
    match body {
        RequestBody::JoinGroup(req) => {
            for p in &req.protocols {
                if let Ok(topics) = decode_subscription(&p.metadata) {
                    let again = decode_subscription(&encode_subscription(&topics))
                        .expect("an encoded subscription decodes");
                    assert_eq!(again, topics);
                }
            }
        }
        RequestBody::SyncGroup(req) => {
            for a in &req.assignments {
                if let Ok(assignment) = decode_assignment(&a.assignment) {
                    let again = decode_assignment(&encode_assignment(&assignment))
                        .expect("an encoded assignment decodes");
                    assert_eq!(again, assignment);
                }
            }
        }
        _ => {}
    }
}

/// A connection that hands out the stream in chunks of sizes cycling through `sizes`.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: [usize; 3],
    turn: usize,
}

impl<'a> Chunked<'a> {
    /// The next piece of the stream: this turn's size, at most `max` bytes.
    fn next_piece(&mut self, max: usize) -> &'a [u8] {
        let n = self.sizes[self.turn % 3].min(max).min(self.data.len());
        self.turn += 1;
        let (piece, rest) = self.data.split_at(n);
        self.data = rest;
        piece
    }
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let piece = self.next_piece(out.len());
        out[..piece.len()].copy_from_slice(piece);
        Poll::Ready(Ok(piece.len()))
    }
}

/// Receives (a large frame's reads) follow the same cycle of sizes; every third finds nothing
/// waiting, so the reader also waits through `poll_read`.
impl ReceiveInto for Chunked<'_> {
    fn try_receive_into(
        &mut self,
        buf: &mut Vec<u8>,
        max: usize,
    ) -> std::io::Result<Option<usize>> {
        if self.turn % 3 == 2 {
            self.turn += 1;
            return Ok(None);
        }
        let piece = self.next_piece(max);
        buf.extend_from_slice(piece);
        Ok(Some(piece.len()))
    }
}

fn frame_stream(rest: &[u8]) {
    if rest.len() < 4 {
        return;
    }
    let sizes = [
        1 + rest[0] as usize,
        1 + rest[1] as usize * 7,
        1 + rest[2] as usize * 331,
    ];
    // Small limits make the too-large path reachable; large ones let a claimed size go past the
    // 64 KiB read buffer (the separate large-frame path).
    let max_frame = 1usize << (3 + rest[3] % 18);
    let stream = &rest[4..];
    let source = Chunked {
        data: stream,
        sizes,
        turn: 0,
    };
    let mut reader = FrameReader::new(source, max_frame);
    let mut frames: Vec<Bytes> = Vec::new();
    let ending = futures_lite::future::block_on(async {
        loop {
            match reader.next_buffered() {
                Ok(Some(f)) => {
                    frames.push(f);
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Err(e),
            }
            match reader.read_more().await {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    // The frames are the stream's, in order, each with its own prefix.
    let mut pos = 0usize;
    for f in &frames {
        assert!(f.len() >= MIN_FRAME && f.len() <= max_frame);
        let prefix = i32::from_be_bytes(stream[pos..pos + 4].try_into().expect("4 bytes"));
        assert_eq!(prefix as usize, f.len());
        assert_eq!(&stream[pos + 4..pos + 4 + f.len()], &f[..]);
        pos += 4 + f.len();
    }
    match ending {
        Ok(()) => assert_eq!(pos, stream.len(), "clean end of stream between frames"),
        Err(FrameError::TooLarge { size, max }) => {
            assert_eq!(max, max_frame);
            assert!(size < 0 || size as usize > max_frame);
        }
        Err(FrameError::TooShort(size)) => assert!(size < MIN_FRAME),
        Err(FrameError::ClosedInside(_)) => assert!(pos < stream.len()),
        Err(FrameError::Io(e)) => panic!("the in-memory stream cannot fail: {e}"),
    }
    for f in frames {
        raw_frame(&f);
    }
}
