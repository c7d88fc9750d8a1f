//! Splitting one glommio TCP stream into a read half and a write half for two tasks of the same
//! shard, without a lock.
//!
//! glommio keeps separate readiness sources for reads and writes, so a read and a write may be
//! pending at once. Both halves share the stream through an `Rc<RefCell>` that is borrowed only
//! inside a poll, never across an await, so the borrows cannot conflict (and, unlike a generic
//! split, no Mutex is taken on the data path). Used by the broker's connections and by the
//! benchmark client.
//!
//! [`write_gathered`] writes a frame made of several buffers (a Fetch response's header and
//! record chunks, a produce request's record sets) with one `sendmsg` where the socket takes it
//! all, instead of one write per buffer.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

/// One direction of a split stream (see [`split`]).
pub struct StreamHalf(Rc<RefCell<TcpStream>>);

/// Splits `stream` into (read half, write half); both may also be used for either direction.
pub fn split(stream: TcpStream) -> (StreamHalf, StreamHalf) {
    let shared = Rc::new(RefCell::new(stream));
    (StreamHalf(shared.clone()), StreamHalf(shared))
}

impl AsyncRead for StreamHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for StreamHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

/// Receives straight into the vector's spare capacity (one `recv` with MSG_DONTWAIT), for the
/// large frames that would otherwise be zero-filled before every read. glommio keeps no bytes
/// of its own for a stream (a read is a direct `recv`, or a wait for readability and then one),
/// so mixing these receives with the half's own reads keeps the bytes in order.
impl crate::server::framing::ReceiveInto for StreamHalf {
    fn try_receive_into(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<Option<usize>> {
        buf.reserve(max);
        let spare = &mut buf.spare_capacity_mut()[..max];
        // SAFETY: `recv` writes at most `spare.len()` bytes into `spare`, memory owned by `buf`
        // that nothing else references during the call; it returns how many it wrote.
        let n = unsafe {
            libc::recv(
                self.as_raw_fd(),
                spare.as_mut_ptr().cast::<libc::c_void>(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        let n = n as usize;
        // SAFETY: the kernel initialised the first `n` bytes of the spare capacity, which
        // follow the vector's `len` initialised bytes.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(Some(n))
    }
}

/// The socket's descriptor, for direct syscalls (the gathered `sendmsg`).
impl AsRawFd for StreamHalf {
    fn as_raw_fd(&self) -> RawFd {
        self.0.borrow().as_raw_fd()
    }
}

/// Writes `parts` in order, all of them. Each step is one non-blocking `sendmsg` of everything
/// left (one syscall, and with TCP_NODELAY no small segment per buffer); when the socket is full,
/// the rest of the current part goes through the async writer, which waits for room, and the
/// next step gathers again. `progressed` is called after every step that sent bytes.
///
/// Safe to mix with the half's own writes: glommio does not buffer them (a write is a direct
/// `send`, or a wait for the socket to be writable and then one).
pub async fn write_gathered(
    half: &mut StreamHalf,
    parts: &[&[u8]],
    mut progressed: impl FnMut(),
) -> io::Result<()> {
    let fd = half.as_raw_fd();
    let mut cursor = Cursor { part: 0, skip: 0 };
    cursor.settle(parts);
    while cursor.part < parts.len() {
        let n = match send_gathered(fd, parts, &cursor) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                0
            }
            Err(e) => return Err(e),
        };
        let n = if n > 0 {
            n
        } else {
            let n = half.write(&parts[cursor.part][cursor.skip..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            n
        };
        progressed();
        cursor.advance(parts, n);
    }
    Ok(())
}

/// How far [`write_gathered`] has got: bytes `skip..` of `parts[part]` and all later parts are
/// left to send.
struct Cursor {
    part: usize,
    skip: usize,
}

impl Cursor {
    /// Moves past `n` sent bytes.
    fn advance(&mut self, parts: &[&[u8]], mut n: usize) {
        while n > 0 && self.part < parts.len() {
            let left = parts[self.part].len() - self.skip;
            if n < left {
                self.skip += n;
                return;
            }
            n -= left;
            self.part += 1;
            self.skip = 0;
        }
        self.settle(parts);
    }

    /// Skips empty parts, so that the current one, if any, has bytes left.
    fn settle(&mut self, parts: &[&[u8]]) {
        while self.part < parts.len() && parts[self.part].len() == self.skip {
            self.part += 1;
            self.skip = 0;
        }
    }
}

/// One non-blocking `sendmsg` of what is left of `parts` (at most `UIO_MAXIOV` buffers of it).
fn send_gathered(fd: RawFd, parts: &[&[u8]], from: &Cursor) -> io::Result<usize> {
    let rest = std::iter::once(&parts[from.part][from.skip..])
        .chain(parts[from.part + 1..].iter().copied());
    let iov: Vec<libc::iovec> = rest
        .filter(|p| !p.is_empty())
        .take(libc::UIO_MAXIOV as usize)
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        })
        .collect();
    // SAFETY: msghdr is plain data; zeroed is a valid empty value, then iov points at `iov`,
    // whose buffers are borrowed for the duration of the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: fd is the connection's open socket; msg and the iovecs outlive the call.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::Duration;

    use super::*;
    use crate::io::test_executor::on_executor;

    /// The byte at `pos` of the test's stream.
    fn pattern(pos: usize) -> u8 {
        (pos % 251) as u8
    }

    fn set_buffer(fd: RawFd, option: libc::c_int, bytes: libc::c_int) {
        // SAFETY: fd is an open socket; the option value is a c_int that outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                &bytes as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "setsockopt: {}", io::Error::last_os_error());
    }

    /// Parts of several sizes, empty ones among them and more than `UIO_MAXIOV` of them, written
    /// through small socket buffers to a reader that starts late (so `sendmsg` finds the socket
    /// full and the async writer has to wait): the reader gets exactly the parts' bytes, in
    /// order. Small on purpose: other tests measure the heap meanwhile.
    #[test]
    fn gathered_writes_arrive_whole_and_in_order() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        set_buffer(listener.as_raw_fd(), libc::SO_RCVBUF, 4096);
        let addr = listener.local_addr().expect("local addr");
        let lens: Vec<usize> = (0..libc::UIO_MAXIOV as usize + 300)
            .map(|i| [0, 1, 4096, 17, 3000][i % 5])
            .collect();
        let total: usize = lens.iter().sum();
        let data: Vec<u8> = (0..total).map(pattern).collect();
        let reader = std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().expect("accept");
            std::thread::sleep(Duration::from_millis(200));
            let mut got = 0usize;
            let mut buf = vec![0u8; 16 * 1024];
            while got < total {
                let n = sock.read(&mut buf).expect("read");
                assert!(n > 0, "connection closed after {got} of {total} bytes");
                for (i, b) in buf[..n].iter().enumerate() {
                    assert_eq!(*b, pattern(got + i), "byte {} of {total}", got + i);
                }
                got += n;
            }
            let mut rest = [0u8; 1];
            assert_eq!(
                sock.read(&mut rest).expect("read at the end"),
                0,
                "bytes past the parts"
            );
            got
        });
        let steps = on_executor(move || async move {
            let stream = glommio::net::TcpStream::connect(addr)
                .await
                .expect("connect");
            let (_, mut half) = split(stream);
            set_buffer(half.as_raw_fd(), libc::SO_SNDBUF, 4096);
            let mut parts: Vec<&[u8]> = Vec::new();
            let mut at = 0;
            for len in &lens {
                parts.push(&data[at..at + len]);
                at += len;
            }
            let mut steps = 0usize;
            write_gathered(&mut half, &parts, || steps += 1)
                .await
                .expect("write");
            steps
        });
        assert_eq!(reader.join().expect("reader thread"), total);
        assert!(
            steps >= 2,
            "{total} bytes through small buffers in {steps} step(s)"
        );
    }
}
