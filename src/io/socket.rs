//! Splitting one glommio TCP stream into a read half and a write half for two tasks of the same
//! shard, without a lock.
//!
//! glommio keeps separate readiness sources for reads and writes, so a read and a write may be
//! pending at once. Both halves share the stream through an `Rc<RefCell>` that is borrowed only
//! inside a poll, never across an await, so the borrows cannot conflict (and, unlike a generic
//! split, no Mutex is taken on the data path). Used by the broker's connections and by the
//! benchmark client.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
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

/// The socket's descriptor, for direct syscalls (the benchmark client's gathered `sendmsg`).
impl std::os::fd::AsRawFd for StreamHalf {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.borrow().as_raw_fd()
    }
}
