//! The Kafka listener of one shard. Every shard binds the same address with SO_REUSEPORT
//! (glommio's `TcpListener::bind` sets it) and serves the connections the kernel hands it,
//! start to finish, on its own core.

use std::cell::RefCell;
use std::rc::Rc;

use glommio::net::TcpListener;
use glommio::Task;

use crate::shard::Shard;

thread_local! {
    /// The accept loop of this shard's thread, cancelled at shutdown.
    static ACCEPT: RefCell<Option<Task<()>>> = const { RefCell::new(None) };
}

/// Binds this shard's listener and starts accepting. Called once per shard at boot.
pub fn start(shard: &Rc<Shard>) -> std::io::Result<()> {
    let listener =
        TcpListener::bind(shard.config.listen).map_err(|e| std::io::Error::other(e.to_string()))?;
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
    let task = glommio::spawn_local(async move {
        loop {
            match listener.accept().await {
                Ok(stream) => {
                    let shard = shard.clone();
                    glommio::spawn_local(super::connection::serve(shard, stream)).detach();
                }
                Err(e) => {
                    // Out of file descriptors and the like: log, back off, keep serving others.
                    log::warn!("shard {}: accept failed: {e}", shard.id);
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
