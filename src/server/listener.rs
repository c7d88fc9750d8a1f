//! The Kafka listener of one shard. Every shard binds the same address with SO_REUSEPORT and
//! serves the connections the kernel hands it, start to finish, on its own core.
//!
//! The socket also has SO_REUSEADDR (glommio's own `bind` sets only SO_REUSEPORT), which its
//! accepted connections inherit: after a restart, connections of the previous process still in
//! FIN_WAIT/TIME_WAIT on the port then do not block the new listener or the start-up check that
//! no other broker listens there (`shard::ensure_address_free`), only a listening socket does.
//!
//! `max.connections` is split evenly over the shards (the kernel spreads new connections over
//! the SO_REUSEPORT sockets, so no shard needs to know another's count): a shard with its share
//! open stops accepting, as Kafka's acceptor does, and new connections wait in its listen backlog
//! until one of its connections closes.
//!
//! `socket.receive.buffer.bytes` and `socket.send.buffer.bytes` (Kafka's names) set SO_RCVBUF and
//! SO_SNDBUF on the listening socket before `listen`, so every accepted connection inherits them
//! and its window scale fits. Unlike Kafka (102400) they default to -1, the kernel's
//! autotuning: in W5 by hand (1,000 connections at more than one core takes) a fixed 100 KiB
//! receive buffer cost the broker more reads per byte (busy 0.86 against 0.76) and throughput
//! (859k against 1,064k rec/s), and 1 MiB gained nothing (951k). Linux caps both at
//! `net.core.rmem_max` / `wmem_max` unless raised there.

use std::cell::RefCell;
use std::rc::Rc;

use glommio::net::TcpListener;
use glommio::sync::Semaphore;
use glommio::Task;

use crate::shard::Shard;

thread_local! {
    /// The accept loop of this shard's thread, cancelled at shutdown.
    static ACCEPT: RefCell<Option<Task<()>>> = const { RefCell::new(None) };
}

/// A listening socket on `addr` with SO_REUSEADDR and SO_REUSEPORT, as a glommio listener.
/// Socket buffer sizes, when given, are set before `listen`, so accepted connections inherit
/// them and their window scale is chosen to fit.
fn bind(
    addr: std::net::SocketAddr,
    receive_buffer: Option<usize>,
    send_buffer: Option<usize>,
) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if let Some(bytes) = receive_buffer {
        socket.set_recv_buffer_size(bytes)?;
    }
    if let Some(bytes) = send_buffer {
        socket.set_send_buffer_size(bytes)?;
    }
    if receive_buffer.is_some() || send_buffer.is_some() {
        // Linux reports twice what was asked (its bookkeeping), capped by rmem_max/wmem_max.
        log::info!(
            "listener {addr}: SO_RCVBUF {} bytes, SO_SNDBUF {} bytes (as the kernel reports them)",
            socket.recv_buffer_size()?,
            socket.send_buffer_size()?
        );
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    // SAFETY: the descriptor is a bound, listening TCP socket that we own and hand over whole
    // (into_raw_fd gives up our ownership), which is what glommio's from_raw_fd requires.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// Binds this shard's listener and starts accepting. Called once per shard at boot.
pub fn start(shard: &Rc<Shard>) -> std::io::Result<()> {
    let listener = bind(
        shard.config.listen,
        shard.config.socket_receive_buffer_bytes,
        shard.config.socket_send_buffer_bytes,
    )?;
    log::info!(
        "shard {} on core {} listening on {}",
        shard.id,
        shard.cpu,
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    let shard = shard.clone();
    let share = shard
        .config
        .max_connections
        .div_ceil(shard.nr_shards.max(1))
        .max(1);
    // One permit per open connection; it is released when the connection's task ends.
    let slots = Rc::new(Semaphore::new(share as u64));
    let task = glommio::spawn_local(async move {
        loop {
            let permit = match slots.try_acquire_static_permit(1) {
                Ok(permit) => permit,
                Err(_) => {
                    crate::log_limited!(
                        log::Level::Warn,
                        "shard {}: {share} connections open, its share of max.connections={}: not accepting until one closes",
                        shard.id,
                        shard.config.max_connections
                    );
                    match slots.acquire_static_permit(1).await {
                        Ok(permit) => permit,
                        // Only a closed semaphore fails, and nothing closes this one.
                        Err(_) => return,
                    }
                }
            };
            match listener.accept().await {
                Ok(stream) => {
                    shard.probe.connection_accepted();
                    let shard = shard.clone();
                    glommio::spawn_local(async move {
                        super::connection::serve(shard, stream).await;
                        drop(permit);
                    })
                    .detach();
                }
                Err(e) => {
                    // Out of file descriptors and the like: log, back off, keep serving others.
                    // E.g. EMFILE under a connection flood: once per burst, not per attempt.
                    crate::log_limited!(log::Level::Warn, "shard {}: accept failed: {e}", shard.id);
                    glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
    ACCEPT.with(|a| *a.borrow_mut() = Some(task));
    Ok(())
}

/// Stops accepting new connections on this shard (dropping the task closes the socket).
pub fn stop(_shard: &Rc<Shard>) {
    ACCEPT.with(|a| {
        if let Some(task) = a.borrow_mut().take() {
            drop(task);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// SO_RCVBUF / SO_SNDBUF of an open socket, as the kernel reports them.
    fn buffers(fd: std::os::fd::RawFd) -> (usize, usize) {
        // SAFETY: borrows a descriptor the caller keeps open for the duration of the call.
        let socket = std::mem::ManuallyDrop::new(unsafe {
            <socket2::Socket as std::os::fd::FromRawFd>::from_raw_fd(fd)
        });
        (
            socket.recv_buffer_size().expect("SO_RCVBUF"),
            socket.send_buffer_size().expect("SO_SNDBUF"),
        )
    }

    #[test]
    fn accepted_connections_inherit_the_configured_socket_buffers() {
        crate::io::test_executor::on_executor(|| async {
            let listener = bind(
                "127.0.0.1:0".parse().expect("address"),
                Some(48 << 10),
                Some(40 << 10),
            )
            .expect("bind");
            let addr = listener.local_addr().expect("address");
            let client = std::net::TcpStream::connect(addr).expect("connect");
            let accepted = listener.accept().await.expect("accept");
            // Linux doubles what was asked; either way it is not the autotuned default.
            assert_eq!(buffers(accepted.as_raw_fd()), (96 << 10, 80 << 10));
            drop(client);

            // Unset: the kernel's defaults, which are not the values above.
            let listener = bind("127.0.0.1:0".parse().expect("address"), None, None).expect("bind");
            let addr = listener.local_addr().expect("address");
            let _client = std::net::TcpStream::connect(addr).expect("connect");
            let accepted = listener.accept().await.expect("accept");
            let (rcv, snd) = buffers(accepted.as_raw_fd());
            assert_ne!((rcv, snd), (96 << 10, 80 << 10));
        });
    }
}
