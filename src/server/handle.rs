//! Controlling a server from outside its loop: a handle that stops it from
//! another thread, SIGINT/SIGTERM (and SIGHUP, which reloads a TLS certificate)
//! as a poll source, and a server run on its own thread (for tests, benchmarks
//! and embedding).

use super::{Server, SIGNALS};
use log::error;
use mio::{Interest, Waker};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Stops a running server from another thread.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
}

impl ServerHandle {
    /// Asks the server to shut down gracefully: stop accepting, send close 1001 to
    /// every WebSocket peer, flush, and return from `run`.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            error!("could not wake the server loop: {e}");
        }
    }
}

impl Server {
    /// A handle that stops the server from another thread.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            waker: Arc::clone(&self.waker),
            stop: Arc::clone(&self.stop),
        }
    }

    /// Makes SIGINT and SIGTERM start a graceful shutdown, and with TLS, SIGHUP
    /// reload the certificate (without TLS, SIGHUP keeps its default action).
    /// For the binary; tests use [`ServerHandle::stop`].
    pub fn handle_signals(&mut self) -> io::Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut wanted = vec![SIGINT, SIGTERM];
        if self.is_tls() {
            wanted.push(SIGHUP);
        }
        let mut signals = signal_hook_mio::v1_0::Signals::new(wanted)?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }
}

/// A server running on its own thread.
#[derive(Debug)]
pub struct RunningServer {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    thread: JoinHandle<io::Result<()>>,
}

impl RunningServer {
    /// Stops the server and waits for its thread.
    pub fn stop(self) -> io::Result<()> {
        self.handle.stop();
        self.thread
            .join()
            .map_err(|_| io::Error::other("server thread panicked"))?
    }
}

/// Binds a server with `config` on a new thread and returns once it listens.
pub fn spawn(config: crate::Config) -> io::Result<RunningServer> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("loopchat".into())
        .spawn(move || {
            let server = match Server::bind(config) {
                Ok(server) => server,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return Ok(());
                }
            };
            let _ = tx.send(Ok((server.local_addr(), server.handle())));
            server.run()
        })?;
    let (addr, handle) = rx
        .recv()
        .map_err(|_| io::Error::other("server thread ended early"))??;
    Ok(RunningServer {
        addr,
        handle,
        thread,
    })
}
