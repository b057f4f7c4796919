//! Kernel cost of one `writev` of many small frames against one `write` of the
//! same frames gathered into one buffer (the choice `OutputQueue::flush` makes
//! for up to 32 KiB of queued frames).
//!
//! `cargo bench --bench writev` writes to 100 loopback TCP connections, round
//! robin, from the main thread while a second thread drains them, and prints the
//! main thread's CPU time per call (`/proc/thread-self/schedstat`), for each frame
//! count and size and each way, interleaved over 5 rounds, with the median.
//! Loopback only, bounded (100,000 calls per case), about 1 minute.

use std::io::{IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const CONNECTIONS: usize = 100;
const CALLS: usize = 100_000;
const ROUNDS: usize = 5;

/// CPU time of the calling thread, in seconds.
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |ns| ns / 1e9)
}

/// CPU microseconds per call for `frames` written to `senders` `CALLS` times.
fn measure(senders: &mut [TcpStream], frames: &[Vec<u8>], gather: bool) -> f64 {
    let mut buffer = Vec::with_capacity(64 * 1024);
    let start = thread_cpu_seconds();
    for call in 0..CALLS {
        let socket = &mut senders[call % senders.len()];
        let result = if gather {
            buffer.clear();
            frames.iter().for_each(|f| buffer.extend_from_slice(f));
            socket.write(&buffer)
        } else {
            // On the stack, as in `OutputQueue::flush`: no allocation per call.
            let mut slices = [IoSlice::new(&[]); 32];
            for (slice, frame) in slices.iter_mut().zip(frames) {
                *slice = IoSlice::new(frame);
            }
            socket.write_vectored(&slices[..frames.len()])
        };
        result.expect("write to a loopback connection");
    }
    (thread_cpu_seconds() - start) * 1e6 / CALLS as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` runs bench targets without `--bench`: stay cheap.
        println!("writev bench: run it with `cargo bench --bench writev`");
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local address");
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..CONNECTIONS {
        let sender = TcpStream::connect(addr).expect("connect");
        sender.set_nodelay(true).expect("TCP_NODELAY");
        senders.push(sender);
        let (receiver, _) = listener.accept().expect("accept");
        receiver.set_nonblocking(true).expect("non-blocking");
        receivers.push(receiver);
    }
    let done = Arc::new(AtomicBool::new(false));
    let draining = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while !done.load(Ordering::Relaxed) {
                for mut r in &receivers {
                    while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
                }
            }
        })
    };
    println!("CPU time per call, median of {ROUNDS} interleaved rounds of {CALLS} calls");
    println!(
        "{:>7} {:>7} {:>12} {:>12} {:>8}",
        "frames", "bytes", "writev us", "gather us", "ratio"
    );
    let warm_up: Vec<Vec<u8>> = vec![vec![0; 100]; 4];
    measure(&mut senders, &warm_up, false);
    measure(&mut senders, &warm_up, true);
    for (count, size) in [
        (2, 150),
        (4, 150),
        (16, 42),
        (16, 150),
        (32, 128),
        (4, 1100),
        (16, 1100),
        (32, 1100),
        (8, 8192),
    ] {
        let frames: Vec<Vec<u8>> = (0..count).map(|i| vec![i as u8; size]).collect();
        let (mut vectored, mut gathered) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            vectored.push(measure(&mut senders, &frames, false));
            gathered.push(measure(&mut senders, &frames, true));
        }
        let (v, g) = (median(vectored), median(gathered));
        println!("{count:>7} {size:>7} {v:>12.2} {g:>12.2} {:>7.2}x", g / v);
    }
    done.store(true, Ordering::Relaxed);
    let _ = draining.join();
}
