//! A TCP proxy on a free port of 127.0.0.1 in front of one target (a Redis
//! server), to break the link between a loopchat node and it on purpose:
//! [`FaultProxy::blackhole`] stalls every connection (a partition: nothing is
//! lost, nothing moves), [`FaultProxy::forward`] heals it, and
//! [`FaultProxy::reset_all`] closes every current connection at once.
//!
//! Test code, so plain std threads: one acceptor, and per connection one thread
//! for each direction. Every blocking read has a short timeout so the threads see
//! the mode change and the stop flag; they all end when the proxy is dropped.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Connections open at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 64;

/// How often an idle thread looks at the mode and the stop flag.
const TICK: Duration = Duration::from_millis(10);

/// A fault-injecting TCP proxy; its threads stop when it is dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    target: SocketAddr,
    blackholed: AtomicBool,
    stop: AtomicBool,
    next_id: AtomicU64,
    /// Open connections: id, the client side, the target side once connected.
    conns: Mutex<Vec<Conn>>,
    /// The connection threads, joined on drop.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

struct Conn {
    id: u64,
    client: TcpStream,
    upstream: Option<TcpStream>,
}

impl Conn {
    fn shutdown(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        if let Some(upstream) = &self.upstream {
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }
}

impl FaultProxy {
    /// A proxy to `target`, forwarding.
    pub fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            target,
            blackholed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("proxy-accept-{}", addr.port()))
                .spawn(move || accept_loop(&listener, &shared))
                .expect("spawn the acceptor")
        };
        FaultProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://127.0.0.1:PORT` of the proxy.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.addr.port())
    }

    /// The address it forwards to.
    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    /// From now on nothing moves in either direction: open connections stay
    /// open, bytes already sent wait (in the kernel's buffers and the proxy's),
    /// and new connections are accepted but not connected onward, so they hang.
    pub fn blackhole(&self) {
        self.shared.blackholed.store(true, Ordering::SeqCst);
    }

    /// Forwarding again: what waited moves on, and connections accepted while
    /// blackholed are connected to the target now (if their client is still
    /// there).
    pub fn forward(&self) {
        self.shared.blackholed.store(false, Ordering::SeqCst);
    }

    /// Closes every current connection at once, both sides (a shutdown, so the
    /// peers see an end of stream; std has no stable `SO_LINGER` for an RST).
    pub fn reset_all(&self) {
        let conns = std::mem::take(&mut *self.shared.conns.lock().unwrap());
        for conn in &conns {
            conn.shutdown();
        }
    }

    /// How many connections are open through the proxy (or hanging in it).
    pub fn connections(&self) -> usize {
        self.shared.conns.lock().unwrap().len()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.reset_all();
        let threads = std::mem::take(&mut *self.shared.threads.lock().unwrap());
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(TICK);
                continue;
            }
            Err(_) => {
                std::thread::sleep(TICK);
                continue;
            }
        };
        let _ = client.set_nonblocking(false);
        let _ = client.set_nodelay(true);
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut conns = shared.conns.lock().unwrap();
            if conns.len() >= MAX_CONNECTIONS {
                let _ = client.shutdown(Shutdown::Both);
                continue;
            }
            let Ok(record) = client.try_clone() else {
                continue;
            };
            conns.push(Conn {
                id,
                client: record,
                upstream: None,
            });
        }
        let worker = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("proxy-conn-{id}"))
                .spawn(move || serve(id, client, &shared))
        };
        let mut threads = shared.threads.lock().unwrap();
        threads.retain(|t| !t.is_finished());
        match worker {
            Ok(worker) => threads.push(worker),
            Err(_) => shared.close(id),
        }
    }
}

impl Shared {
    fn running(&self, id: u64) -> bool {
        !self.stop.load(Ordering::SeqCst) && self.conns.lock().unwrap().iter().any(|c| c.id == id)
    }

    /// Removes connection `id` (if still there) and shuts both its sides.
    fn close(&self, id: u64) {
        let mut conns = self.conns.lock().unwrap();
        if let Some(i) = conns.iter().position(|c| c.id == id) {
            conns.swap_remove(i).shutdown();
        }
    }
}

/// One connection: waits while blackholed (dropping it if its client leaves),
/// connects to the target, then pumps client → target here and target → client
/// on a second thread, until either side ends or the proxy closes it.
fn serve(id: u64, client: TcpStream, shared: &Arc<Shared>) {
    let _ = client.set_read_timeout(Some(TICK));
    let mut probe = [0u8; 1];
    while shared.blackholed.load(Ordering::SeqCst) {
        if !shared.running(id) {
            return shared.close(id);
        }
        match client.peek(&mut probe) {
            Ok(0) => return shared.close(id),
            Ok(_) => std::thread::sleep(TICK),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return shared.close(id),
        }
    }
    let Ok(upstream) = TcpStream::connect_timeout(&shared.target, Duration::from_secs(2)) else {
        return shared.close(id);
    };
    let _ = upstream.set_nodelay(true);
    let _ = upstream.set_read_timeout(Some(TICK));
    let (Ok(upstream_record), Ok(client_writer), Ok(upstream_reader)) = (
        upstream.try_clone(),
        client.try_clone(),
        upstream.try_clone(),
    ) else {
        let _ = upstream.shutdown(Shutdown::Both);
        return shared.close(id);
    };
    {
        let mut conns = shared.conns.lock().unwrap();
        match conns.iter_mut().find(|c| c.id == id) {
            Some(conn) => conn.upstream = Some(upstream_record),
            None => {
                // reset_all or drop took it meanwhile.
                let _ = upstream.shutdown(Shutdown::Both);
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
        }
    }
    let back = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("proxy-back-{id}"))
            .spawn(move || pump(id, upstream_reader, client_writer, &shared))
    };
    pump(id, client, upstream, shared);
    if let Ok(back) = back {
        let _ = back.join();
    }
}

/// Copies `from` → `to` while the connection is open, holding still while the
/// proxy is blackholed (a chunk read just before waits too). The end of either
/// direction closes the whole connection.
fn pump(id: u64, mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending = 0;
    while shared.running(id) {
        if shared.blackholed.load(Ordering::SeqCst) {
            std::thread::sleep(TICK);
            continue;
        }
        if pending > 0 {
            if to.write_all(&buf[..pending]).is_err() {
                break;
            }
            pending = 0;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => pending = n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    shared.close(id);
}
