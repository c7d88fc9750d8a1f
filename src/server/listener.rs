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
fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    // SAFETY: the descriptor is a bound, listening TCP socket that we own and hand over whole
    // (into_raw_fd gives up our ownership), which is what glommio's from_raw_fd requires.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// Binds this shard's listener and starts accepting. Called once per shard at boot.
pub fn start(shard: &Rc<Shard>) -> std::io::Result<()> {
    let listener = bind(shard.config.listen)?;
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
