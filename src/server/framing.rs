//! Request framing: size-prefixed frames read off a connection, each frame in an allocation of
//! exactly its own size.
//!
//! Why exact allocations: record batches are kept zero-copy from the request frame to the
//! shard's batch cache and pending-flush buffer, so every cached batch keeps its whole frame's
//! allocation alive. When frames were split off one shared 64 KiB read buffer, a 1 KiB batch
//! pinned a 64 KiB block and the real memory behind a 128 MiB cache grew to 5.4 GB (W5: one small
//! batch per request). Now:
//! - frames that fit in the read buffer are read together (one read can bring many pipelined
//!   requests) and each is copied out into its own allocation, a copy of bytes still in the CPU
//!   cache; the read buffer is reused and never zeroed again;
//! - a frame larger than the read buffer (produce requests carrying big batches) is read straight
//!   into its own allocation, with no copy beyond what was already buffered.
//!
//! A connection starts with a small read buffer ([`FIRST_READ_BUFFER`]) and gets the full one
//! the first time its traffic needs it (a read fills the small one, or a frame does not fit):
//! a thousand connections that never send, or only send the odd metadata request, then hold a
//! KiB each instead of 64.
//!
//! Every read is cancel-safe: a partly read frame lives in the reader, not in a future, so the
//! connection can race [`FrameReader::read_more`] against its idle timer and, when the timer
//! wins but the connection is not idle after all, simply call it again without losing bytes.

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncReadExt};

/// A connection that a large frame is received from without zero-filling its room first: one
/// non-blocking receive straight into a vector's spare capacity. Zero-filling the room of every
/// large frame before reading into it was 5.5–6.9% of the broker's samples under W5, a second
/// pass over each megabyte of produce requests. The receive into untouched memory costs more
/// than into zeroed memory, about half of that back (`perf/2026-12-06-w5-receive-and-writes.md`).
pub trait ReceiveInto {
    /// Appends the bytes one non-blocking receive returns, at most `max`, to `buf`: `Ok(None)`
    /// if none are waiting, `Ok(Some(0))` if the peer closed the connection.
    fn try_receive_into(&mut self, buf: &mut Vec<u8>, max: usize)
        -> std::io::Result<Option<usize>>;
}

/// How much of a large frame's room is zero-filled for a read that waits for the connection
/// (the receives that find bytes waiting need none).
const WAITING_READ_BYTES: usize = 4096;

/// Smallest request: api key, api version, correlation id.
pub const MIN_FRAME: usize = 8;
/// Size of the reusable read buffer: frames up to this size (minus the prefix) are copied out of
/// it; larger ones get a buffer of their own.
pub const READ_BUFFER: usize = 64 * 1024;
/// The read buffer a connection starts with, until its traffic needs [`READ_BUFFER`].
pub const FIRST_READ_BUFFER: usize = 1024;
/// First allocation for a frame larger than the read buffer (see [`FrameReader::start_large`]).
/// Producers fill a request with up to `max.request.size` of batches (1 MiB by default in
/// Kafka's clients and in odradek-bench) and add the request's own fields on top, so a full
/// request is a little over 1 MiB: with a first step of exactly 1 MiB, nearly every one of them
/// was reallocated and its first megabyte copied once more (9% of the broker's samples under W5,
/// `perf/2026-12-06-w5-on-xeon.md`). 2 MiB covers them.
pub const LARGE_FRAME_STEP: usize = 2 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds socket.request.max.bytes ({max})")]
    TooLarge { size: i32, max: usize },
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error("connection closed inside a frame ({0} bytes pending)")]
    ClosedInside(usize),
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
}

pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// A large frame read into its own allocation by [`FrameReader::read_more`].
    ready: Option<Bytes>,
    /// A large frame still arriving (kept here, not in a future, for cancel safety).
    large: Option<LargeFrame>,
    max_frame: usize,
}

/// A frame larger than the read buffer, partly received: `buf[..filled]` is received data,
/// `size` the length it will have. A read cancelled while it waited may leave zeroed room after
/// `filled`, dropped by the next read. The allocation's capacity may be larger than `buf.len()`:
/// capacity that was never written costs no memory, and receives are bounded by a room kept in
/// proportion to what arrived.
struct LargeFrame {
    buf: Vec<u8>,
    filled: usize,
    size: usize,
}

impl<R: AsyncRead + ReceiveInto + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_frame: usize) -> Self {
        FrameReader {
            inner,
            buf: vec![0; FIRST_READ_BUFFER],
            start: 0,
            end: 0,
            ready: None,
            large: None,
            max_frame,
        }
    }

    /// The next complete frame already read (without its size prefix), if any. Errors as soon as
    /// a size prefix is out of bounds, before anything is read or allocated for it.
    pub fn next_buffered(&mut self) -> Result<Option<Bytes>, FrameError> {
        if let Some(frame) = self.ready.take() {
            return Ok(Some(frame));
        }
        let Some(size) = self.buffered_size()? else {
            return Ok(None);
        };
        if self.end - self.start < 4 + size {
            return Ok(None);
        }
        let body = self.start + 4;
        let frame = Bytes::copy_from_slice(&self.buf[body..body + size]);
        self.start = body + size;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(frame))
    }

    /// Reads from the connection: at least one more byte of the current frame, or, for a frame
    /// larger than the read buffer, the whole frame. `Ok(false)` when the peer closed the
    /// connection between frames.
    ///
    /// Cancel-safe: dropping the future before it completes loses no byte already received.
    pub async fn read_more(&mut self) -> Result<bool, FrameError> {
        if self.large.is_some() {
            return self.read_large().await.map(|()| true);
        }
        let size = self.buffered_size()?;
        if let Some(size) = size {
            if 4 + size > READ_BUFFER {
                self.start_large(size);
                return self.read_large().await.map(|()| true);
            }
        }
        // A small buffer that the last read filled, or that the frame does not fit: this
        // connection has real traffic, give it the full buffer (once).
        if self.buf.len() < READ_BUFFER
            && (self.end == self.buf.len() || size.is_some_and(|size| 4 + size > self.buf.len()))
        {
            let mut full = vec![0; READ_BUFFER];
            full[..self.end - self.start].copy_from_slice(&self.buf[self.start..self.end]);
            self.end -= self.start;
            self.start = 0;
            self.buf = full;
        }
        if self.start + 4 + size.unwrap_or(0) > self.buf.len() {
            // The frame would run past the end: move what we have of it to the front.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = self.inner.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            let pending = self.end - self.start;
            return if pending == 0 {
                Ok(false)
            } else {
                Err(FrameError::ClosedInside(pending))
            };
        }
        self.end += n;
        Ok(true)
    }

    /// Bytes received of a frame not yet complete (0 between frames): a client that stalls
    /// with this above 0 stopped in the middle of a request.
    pub fn partial_bytes(&self) -> usize {
        match &self.large {
            Some(large) => 4 + large.filled,
            None => self.end - self.start,
        }
    }

    /// Moves the buffered start of a frame of `size` bytes (its prefix buffered, larger than the
    /// read buffer) into an allocation of its own. The allocation grows with the bytes that
    /// arrive (doubling from [`LARGE_FRAME_STEP`]), never by the size a client merely claims,
    /// and ends exactly `size` long.
    fn start_large(&mut self, size: usize) {
        let have = self.end - self.start - 4;
        let mut buf = Vec::with_capacity(size.min(LARGE_FRAME_STEP.max(have)));
        buf.extend_from_slice(&self.buf[self.start + 4..self.end]);
        self.start = 0;
        self.end = 0;
        self.large = Some(LargeFrame {
            buf,
            filled: have,
            size,
        });
    }

    /// Reads the rest of the large frame in progress; once complete it waits in `ready`.
    async fn read_large(&mut self) -> Result<(), FrameError> {
        let Some(large) = self.large.as_mut() else {
            return Ok(());
        };
        while large.filled < large.size {
            large.buf.truncate(large.filled);
            // Room for the next reads: as much again as has arrived (at least a read buffer's
            // worth), so a client that claims a big frame and stalls pins about twice what it
            // sent, not the whole first allocation.
            let room = (large.filled + large.filled.max(READ_BUFFER)).min(large.size);
            if room > large.buf.capacity() {
                let grown = (large.buf.capacity() * 2).clamp(room, large.size);
                large.buf.reserve_exact(grown - large.buf.len());
            }
            let n = match self
                .inner
                .try_receive_into(&mut large.buf, room - large.filled)?
            {
                Some(n) => n,
                None => {
                    // Nothing waiting: wait through the async reader, into a small zeroed part
                    // of the room.
                    let wait = WAITING_READ_BYTES.min(room - large.filled);
                    large.buf.resize(large.filled + wait, 0);
                    let n = self.inner.read(&mut large.buf[large.filled..]).await?;
                    large.buf.truncate(large.filled + n);
                    n
                }
            };
            if n == 0 {
                return Err(FrameError::ClosedInside(4 + large.filled));
            }
            large.filled += n;
        }
        if let Some(large) = self.large.take() {
            self.ready = Some(Bytes::from(large.buf));
        }
        Ok(())
    }

    /// The size of the frame at the front of the buffer, once its prefix has arrived.
    fn buffered_size(&self) -> Result<Option<usize>, FrameError> {
        if self.end - self.start < 4 {
            return Ok(None);
        }
        let p = &self.buf[self.start..self.start + 4];
        let size = i32::from_be_bytes([p[0], p[1], p[2], p[3]]);
        if size < 0 || size as usize > self.max_frame {
            return Err(FrameError::TooLarge {
                size,
                max: self.max_frame,
            });
        }
        let size = size as usize;
        if size < MIN_FRAME {
            return Err(FrameError::TooShort(size));
        }
        Ok(Some(size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A connection that hands out the given chunks, one per read (split further if the reader's
    /// buffer is smaller), then EOF.
    struct Chunks(std::collections::VecDeque<Vec<u8>>);

    impl Chunks {
        /// The next chunk, at most `max` bytes of it (the rest stays first); empty at EOF.
        fn next_chunk(&mut self, max: usize) -> Vec<u8> {
            let Some(mut chunk) = self.0.pop_front() else {
                return Vec::new();
            };
            if max < chunk.len() {
                self.0.push_front(chunk.split_off(max));
            }
            chunk
        }
    }

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            let chunk = self.next_chunk(out.len());
            out[..chunk.len()].copy_from_slice(&chunk);
            Poll::Ready(Ok(chunk.len()))
        }
    }

    impl ReceiveInto for Chunks {
        fn try_receive_into(
            &mut self,
            buf: &mut Vec<u8>,
            max: usize,
        ) -> std::io::Result<Option<usize>> {
            let chunk = self.next_chunk(max);
            buf.extend_from_slice(&chunk);
            Ok(Some(chunk.len()))
        }
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as i32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    fn body(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Reads every frame until EOF or error.
    fn read_all(chunks: Vec<Vec<u8>>, max: usize) -> (Vec<Bytes>, Option<FrameError>) {
        futures_lite::future::block_on(async {
            let mut r = FrameReader::new(Chunks(chunks.into()), max);
            let mut frames = Vec::new();
            loop {
                match r.next_buffered() {
                    Ok(Some(f)) => {
                        frames.push(f);
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => return (frames, Some(e)),
                }
                match r.read_more().await {
                    Ok(true) => {}
                    Ok(false) => return (frames, None),
                    Err(e) => return (frames, Some(e)),
                }
            }
        })
    }

    /// True when `b` is the only handle on an allocation of exactly its length.
    fn owns_exact_allocation(b: Bytes) -> bool {
        let len = b.len();
        match b.try_into_mut() {
            Ok(m) => m.capacity() == len,
            Err(_) => false,
        }
    }

    #[test]
    fn small_pipelined_frames_each_get_their_own_exact_allocation() {
        let bodies: Vec<Vec<u8>> = (0..50).map(|i| body(100 + i * 37, i as u8)).collect();
        let stream: Vec<u8> = bodies.iter().flat_map(|b| framed(b)).collect();
        let (frames, err) = read_all(vec![stream], 1 << 20);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(frames.len(), bodies.len());
        for (f, b) in frames.into_iter().zip(&bodies) {
            assert_eq!(&f[..], &b[..]);
            assert!(
                owns_exact_allocation(f),
                "a frame shares a larger allocation"
            );
        }
    }

    #[test]
    fn frames_split_at_every_byte_boundary_reassemble() {
        let bodies = [
            body(8, 1),
            body(3000, 2),
            body(READ_BUFFER - 4, 3),
            body(9, 4),
        ];
        let stream: Vec<u8> = bodies.iter().flat_map(|b| framed(b)).collect();
        for step in [1, 3, 7, 4096, 65_535, 70_000] {
            let chunks: Vec<Vec<u8>> = stream.chunks(step).map(|c| c.to_vec()).collect();
            let (frames, err) = read_all(chunks, 1 << 20);
            assert!(err.is_none(), "step {step}: {err:?}");
            let got: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
            let want: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
            assert_eq!(got, want, "step {step}");
        }
    }

    #[test]
    fn large_frame_is_read_into_its_own_allocation() {
        let big = body(LARGE_FRAME_STEP * 2 + 3 * READ_BUFFER + 5, 9);
        let small = body(20, 8);
        let mut stream = framed(&small);
        stream.extend(framed(&big));
        stream.extend(framed(&small));
        let chunks: Vec<Vec<u8>> = stream.chunks(10_000).map(|c| c.to_vec()).collect();
        let (frames, err) = read_all(chunks, 16 << 20);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(frames.len(), 3);
        assert_eq!(&frames[0][..], &small[..]);
        assert_eq!(&frames[1][..], &big[..]);
        assert_eq!(&frames[2][..], &small[..]);
        assert!(frames.into_iter().all(owns_exact_allocation));
    }

    #[test]
    fn bad_size_prefixes_are_refused_before_reading_the_body() {
        let (_, err) = read_all(vec![(-1i32).to_be_bytes().to_vec()], 1 << 20);
        assert!(
            matches!(err, Some(FrameError::TooLarge { size: -1, .. })),
            "{err:?}"
        );
        let (_, err) = read_all(vec![((1i32 << 20) + 1).to_be_bytes().to_vec()], 1 << 20);
        assert!(matches!(err, Some(FrameError::TooLarge { .. })), "{err:?}");
        let (_, err) = read_all(vec![framed(&[0; 7])], 1 << 20);
        assert!(matches!(err, Some(FrameError::TooShort(7))), "{err:?}");
    }

    /// A connection whose every other read is not ready yet (and wakes at once).
    struct Stuttering {
        chunks: Chunks,
        stall: bool,
        nothing_waiting: bool,
    }

    impl AsyncRead for Stuttering {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            out: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            self.stall = !self.stall;
            if self.stall {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Pin::new(&mut self.chunks).poll_read(cx, out)
        }
    }

    /// Every other receive finds nothing waiting, so the reader waits through `poll_read`.
    impl ReceiveInto for Stuttering {
        fn try_receive_into(
            &mut self,
            buf: &mut Vec<u8>,
            max: usize,
        ) -> std::io::Result<Option<usize>> {
            self.nothing_waiting = !self.nothing_waiting;
            if self.nothing_waiting {
                return Ok(None);
            }
            self.chunks.try_receive_into(buf, max)
        }
    }

    #[test]
    fn reads_dropped_while_pending_lose_no_bytes() {
        // What the connection does when its idle timer wins the race: drop the read, read again.
        let bodies = [
            body(100, 1),
            body(LARGE_FRAME_STEP + 3 * READ_BUFFER + 17, 2),
            body(9, 3),
        ];
        let stream: Vec<u8> = bodies.iter().flat_map(|b| framed(b)).collect();
        let chunks: Vec<Vec<u8>> = stream.chunks(5000).map(|c| c.to_vec()).collect();
        let mut r = FrameReader::new(
            Stuttering {
                chunks: Chunks(chunks.into()),
                stall: false,
                nothing_waiting: false,
            },
            16 << 20,
        );
        let mut frames = Vec::new();
        let mut dropped = 0;
        let mut partial_seen = false;
        futures_lite::future::block_on(async {
            loop {
                if let Some(f) = r.next_buffered().unwrap() {
                    frames.push(f);
                    continue;
                }
                partial_seen |= r.partial_bytes() > READ_BUFFER;
                match futures_lite::future::poll_once(r.read_more()).await {
                    None => dropped += 1,
                    Some(Ok(true)) => {}
                    Some(Ok(false)) => break,
                    Some(Err(e)) => panic!("{e}"),
                }
            }
        });
        assert!(dropped > 100, "the test did not drop reads ({dropped})");
        assert!(partial_seen, "partial_bytes never counted the large frame");
        assert_eq!(r.partial_bytes(), 0);
        let got: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        let want: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
        assert!(got == want, "frames differ after dropped reads");
    }

    /// A connection that hands out its chunks, then has nothing more (and never closes).
    struct Stalling(Chunks);

    impl AsyncRead for Stalling {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            out: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            if self.0 .0.is_empty() {
                return Poll::Pending;
            }
            Pin::new(&mut self.0).poll_read(cx, out)
        }
    }

    /// A connection whose bytes are all waiting; counts the reads that went through the async
    /// reader (those that would wait).
    struct AllWaiting {
        chunks: Chunks,
        async_reads: usize,
    }

    impl AsyncRead for AllWaiting {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            out: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            self.async_reads += 1;
            Pin::new(&mut self.chunks).poll_read(cx, out)
        }
    }

    impl ReceiveInto for AllWaiting {
        fn try_receive_into(
            &mut self,
            buf: &mut Vec<u8>,
            max: usize,
        ) -> std::io::Result<Option<usize>> {
            self.chunks.try_receive_into(buf, max)
        }
    }

    #[test]
    fn a_large_frame_whose_bytes_are_waiting_is_received_without_waiting_reads() {
        let big = body(LARGE_FRAME_STEP + 5 * READ_BUFFER + 3, 7);
        let stream = framed(&big);
        // The prefix and a little of the body come in one read into the read buffer; the rest
        // is waiting in chunks.
        let chunks: Vec<Vec<u8>> = std::iter::once(stream[..100].to_vec())
            .chain(stream[100..].chunks(70_000).map(|c| c.to_vec()))
            .collect();
        let conn = AllWaiting {
            chunks: Chunks(chunks.into()),
            async_reads: 0,
        };
        let mut r = FrameReader::new(conn, 16 << 20);
        let frame = futures_lite::future::block_on(async {
            loop {
                if let Some(f) = r.next_buffered().unwrap() {
                    return f;
                }
                if let Err(e) = r.read_more().await {
                    panic!("{e}");
                }
            }
        });
        assert!(frame[..] == big[..], "frame differs");
        assert_eq!(r.inner.async_reads, 1, "only the prefix's read may wait");
    }

    impl ReceiveInto for Stalling {
        fn try_receive_into(
            &mut self,
            buf: &mut Vec<u8>,
            max: usize,
        ) -> std::io::Result<Option<usize>> {
            if self.0 .0.is_empty() {
                return Ok(None);
            }
            self.0.try_receive_into(buf, max)
        }
    }

    #[test]
    fn a_stalled_large_frame_pins_memory_in_proportion_to_what_arrived() {
        let claimed = 64 << 20;
        let mut stream = (claimed as i32).to_be_bytes().to_vec();
        stream.extend(body(300_000, 5));
        let chunks: Vec<Vec<u8>> = stream.chunks(10_000).map(|c| c.to_vec()).collect();
        let mut r = FrameReader::new(Stalling(Chunks(chunks.into())), 128 << 20);
        futures_lite::future::block_on(async {
            while futures_lite::future::poll_once(r.read_more())
                .await
                .is_some()
            {}
        });
        assert_eq!(r.partial_bytes(), 4 + 300_000);
        let large = r.large.as_ref().expect("a large frame in progress");
        assert_eq!(large.filled, 300_000);
        assert!(
            large.buf.len() <= 2 * 300_000 + READ_BUFFER,
            "{} bytes zeroed for 300000 received",
            large.buf.len()
        );
        assert!(
            large.buf.capacity() < claimed,
            "allocated by the claimed size"
        );
    }

    #[test]
    fn the_read_buffer_stays_small_until_traffic_needs_it() {
        let small = [body(10, 1), body(200, 2), body(50, 3)];
        let stream: Vec<u8> = small.iter().flat_map(|b| framed(b)).collect();
        let chunks: Vec<Vec<u8>> = stream.chunks(100).map(|c| c.to_vec()).collect();
        let mut r = FrameReader::new(Stalling(Chunks(chunks.into())), 1 << 20);
        let mut frames = Vec::new();
        futures_lite::future::block_on(async {
            loop {
                while let Some(f) = r.next_buffered().unwrap() {
                    frames.push(f);
                }
                if futures_lite::future::poll_once(r.read_more())
                    .await
                    .is_none()
                {
                    break;
                }
            }
        });
        assert_eq!(frames.len(), 3);
        assert_eq!(
            r.buf.len(),
            FIRST_READ_BUFFER,
            "a quiet connection got the full buffer"
        );

        // One frame that does not fit the small buffer (read across many small reads).
        let medium = body(3000, 4);
        let chunks: Vec<Vec<u8>> = framed(&medium).chunks(700).map(|c| c.to_vec()).collect();
        let (frames, err) = {
            let mut r = FrameReader::new(Chunks(chunks.into()), 1 << 20);
            let mut frames = Vec::new();
            let err = futures_lite::future::block_on(async {
                loop {
                    if let Some(f) = r.next_buffered().unwrap() {
                        frames.push(f);
                        continue;
                    }
                    match r.read_more().await {
                        Ok(true) => {}
                        Ok(false) => return None,
                        Err(e) => return Some(e),
                    }
                }
            });
            assert_eq!(
                r.buf.len(),
                READ_BUFFER,
                "the buffer did not grow for a 3000-byte frame"
            );
            (frames, err)
        };
        assert!(err.is_none(), "{err:?}");
        assert_eq!(frames.len(), 1);
        assert_eq!(&frames[0][..], &medium[..]);
    }

    #[test]
    fn eof_inside_a_frame_is_an_error_and_between_frames_is_not() {
        let mut cut = framed(&body(100, 1));
        cut.truncate(50);
        let (frames, err) = read_all(vec![framed(&body(10, 2)), cut], 1 << 20);
        assert_eq!(frames.len(), 1);
        assert!(matches!(err, Some(FrameError::ClosedInside(50))), "{err:?}");

        let mut cut_large = framed(&body(2 * READ_BUFFER, 1));
        cut_large.truncate(READ_BUFFER + 10);
        let (_, err) = read_all(vec![cut_large], 1 << 20);
        assert!(matches!(err, Some(FrameError::ClosedInside(_))), "{err:?}");

        let (frames, err) = read_all(vec![framed(&body(10, 2))], 1 << 20);
        assert_eq!(frames.len(), 1);
        assert!(err.is_none());
    }
}
