//! Criterion microbenchmarks of loopchat's sans-IO protocol code (issue 5):
//! frame header decode/encode, unmasking, the streaming message assembler with its
//! UTF-8 validation, and the handshake accept key.
//!
//! `cargo bench --bench codec` (short measurement times: the whole run is < 1 min).
//! `cargo bench --bench codec -- mask` runs only the benchmarks whose id contains "mask".

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use loopchat::frame::{apply_mask, decode_header, encode_header, OpCode};
use loopchat::handshake::accept_key;
use loopchat::message::{Event, Receiver};

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame, as a browser would send it.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loopchat::frame::encode_client_frame(&mut out, 0x80 | opcode, MASK, payload);
    out
}

/// `n` bytes of valid UTF-8: mostly ASCII with 2-, 3- and 4-byte sequences mixed in,
/// like chat text in several languages.
fn utf8_text(n: usize) -> Vec<u8> {
    let pieces = [
        "hello, world ",
        "héllo ",
        "日本語 ",
        "🙂 ",
        "plain ascii text ",
    ];
    let mut s = String::with_capacity(n + 32);
    let mut i = 0;
    while s.len() < n {
        s.push_str(pieces[i % pieces.len()]);
        i += 1;
    }
    while s.len() > n {
        s.pop();
    }
    while s.len() < n {
        s.push('.');
    }
    s.into_bytes()
}

fn human(n: usize) -> String {
    match n {
        n if n >= 1 << 20 => format!("{}MiB", n >> 20),
        n if n >= 1 << 10 => format!("{}KiB", n >> 10),
        n => format!("{n}B"),
    }
}

/// Names the three length encodings of RFC 6455 section 5.2.
fn len_class(len: usize) -> String {
    match len {
        0..=125 => format!("len7_{len}B"),
        126..=0xffff => format!("len16_{len}B"),
        _ => format!("len64_{len}B"),
    }
}

fn frame_header(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_header");
    for len in [32usize, 1024, 70_000] {
        let frame = client_frame(0x1, &vec![b'x'; len]);
        let hdr = frame[..14.min(frame.len())].to_vec();
        g.bench_with_input(
            BenchmarkId::new("decode", len_class(len)),
            &hdr,
            |b, hdr| b.iter(|| decode_header(black_box(hdr)).unwrap().unwrap()),
        );
    }
    let mut out = Vec::with_capacity(64);
    for len in [32usize, 1024, 70_000] {
        g.bench_function(BenchmarkId::new("encode", len_class(len)), |b| {
            b.iter(|| {
                out.clear();
                encode_header(&mut out, true, OpCode::Text, black_box(len));
                black_box(out.len())
            })
        });
    }
    g.finish();
}

fn unmask(c: &mut Criterion) {
    let mut g = c.benchmark_group("unmask");
    for len in [16usize, 1024, 64 * 1024, 1024 * 1024] {
        let mut buf = vec![0x5au8; len];
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::new("apply_mask", human(len)), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), black_box(MASK), 0))
        });
        // an offset that is not a multiple of 4 (payload arriving in pieces)
        if len == 64 * 1024 {
            g.bench_function(BenchmarkId::new("apply_mask_offset3", human(len)), |b| {
                b.iter(|| apply_mask(black_box(&mut buf[3..]), black_box(MASK), 3))
            });
        }
    }
    g.finish();
}

thread_local! {
    /// The buffer `drain` reads into, as the server reads from a socket into its
    /// read buffer (the receiver unmasks whole small frames in place there).
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Feeds `input` to a fresh-or-reused receiver, counting messages; panics on errors.
/// The copy of `input` into a reused buffer stands for the socket read.
fn drain(rx: &mut Receiver, input: &[u8]) -> usize {
    READ_BUFFER.with_borrow_mut(|buffer| {
        buffer.clear();
        buffer.extend_from_slice(input);
        let mut pos = 0;
        let mut msgs = 0;
        loop {
            let (used, ev) = rx.next_event(&mut buffer[pos..]).expect("valid input");
            pos += used;
            match ev {
                Some(Event::Message(_, p)) => {
                    black_box(p);
                    msgs += 1;
                }
                Some(_) => {}
                None => {
                    if pos == buffer.len() {
                        return msgs;
                    }
                }
            }
        }
    })
}

fn utf8_and_receiver(c: &mut Criterion) {
    let mut g = c.benchmark_group("utf8");
    for len in [1024usize, 64 * 1024, 1024 * 1024] {
        let text = utf8_text(len);
        g.throughput(Throughput::Bytes(len as u64));
        // the baseline: std's validator over the same bytes
        g.bench_with_input(
            BenchmarkId::new("std_from_utf8", human(len)),
            &text,
            |b, t| b.iter(|| std::str::from_utf8(black_box(t)).is_ok()),
        );
        // the receiver: header, unmask, copy, incremental UTF-8 validation
        let text_frame = client_frame(0x1, &text);
        let bin_frame = client_frame(0x2, &text);
        let mut rx = Receiver::new(4 << 20);
        g.bench_with_input(
            BenchmarkId::new("receiver_text", human(len)),
            &text_frame,
            |b, f| b.iter(|| drain(&mut rx, black_box(f))),
        );
        g.bench_with_input(
            BenchmarkId::new("receiver_binary", human(len)),
            &bin_frame,
            |b, f| b.iter(|| drain(&mut rx, black_box(f))),
        );
        // the same text message in 16 fragments: validation across boundaries
        if len == 64 * 1024 {
            let mut frag = Vec::new();
            let step = len / 16 + 1; // boundaries fall inside multi-byte sequences
            let chunks: Vec<&[u8]> = text.chunks(step).collect();
            for (i, ch) in chunks.iter().enumerate() {
                let op = if i == 0 { 0x1 } else { 0x0 };
                let mut f = client_frame(op, ch);
                if i + 1 < chunks.len() {
                    f[0] &= 0x7f; // FIN clear
                }
                frag.extend_from_slice(&f);
            }
            g.bench_with_input(
                BenchmarkId::new("receiver_text_16_fragments", human(len)),
                &frag,
                |b, f| b.iter(|| drain(&mut rx, black_box(f))),
            );
        }
        // plain ASCII text (most chat traffic): std's validator has a fast path for it
        if len == 64 * 1024 {
            let ascii: Vec<u8> = (0..len).map(|i| b' ' + (i % 95) as u8).collect();
            g.bench_with_input(
                BenchmarkId::new("std_from_utf8_ascii", human(len)),
                &ascii,
                |b, t| b.iter(|| std::str::from_utf8(black_box(t)).is_ok()),
            );
            let ascii_frame = client_frame(0x1, &ascii);
            g.bench_with_input(
                BenchmarkId::new("receiver_text_ascii", human(len)),
                &ascii_frame,
                |b, f| b.iter(|| drain(&mut rx, black_box(f))),
            );
        }
        // the stream split into 1,460-byte reads (one TCP segment each)
        if len == 64 * 1024 {
            g.bench_with_input(
                BenchmarkId::new("receiver_text_1460B_reads", human(len)),
                &text_frame,
                |b, f| {
                    b.iter(|| {
                        f.chunks(1460)
                            .map(|piece| drain(&mut rx, black_box(piece)))
                            .sum::<usize>()
                    })
                },
            );
        }
    }
    g.finish();

    // many small messages in one read, as in the echo and chat load tests
    let mut g = c.benchmark_group("receiver_small_messages");
    let msg = utf8_text(32);
    let mut input = Vec::new();
    let n = 2048;
    for _ in 0..n {
        input.extend_from_slice(&client_frame(0x1, &msg));
    }
    g.throughput(Throughput::Elements(n as u64));
    let mut rx = Receiver::new(1 << 20);
    g.bench_function("2048x32B_text", |b| {
        b.iter(|| drain(&mut rx, black_box(&input)))
    });
    g.bench_function("2048x32B_text_fresh_receiver", |b| {
        b.iter_batched(
            || Receiver::new(1 << 20),
            |mut rx| drain(&mut rx, black_box(&input)),
            BatchSize::SmallInput,
        )
    });
    // the /echo path of one read at 16 messages in flight: 16 ASCII text frames of
    // 32 B, copied in as the socket read does, decoded, and each encoded into the
    // reused output buffer as the server's reply
    let ascii: Vec<u8> = (0..32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut read = Vec::new();
    for _ in 0..16 {
        read.extend_from_slice(&client_frame(0x1, &ascii));
    }
    let mut out = Vec::with_capacity(4096);
    g.throughput(Throughput::Elements(16));
    g.bench_function("16x32B_ascii_echo", |b| {
        b.iter(|| {
            out.clear();
            READ_BUFFER.with_borrow_mut(|buffer| {
                buffer.clear();
                buffer.extend_from_slice(black_box(&read));
                let mut pos = 0;
                while pos < buffer.len() {
                    let (used, ev) = rx.next_event(&mut buffer[pos..]).expect("valid input");
                    pos += used;
                    if let Some(Event::Message(kind, payload)) = ev {
                        loopchat::frame::encode_frame(&mut out, kind.opcode(), payload);
                    }
                }
            });
            out.len()
        })
    });
    g.finish();
}

fn handshake(c: &mut Criterion) {
    let mut g = c.benchmark_group("handshake");
    g.bench_function("accept_key", |b| {
        b.iter(|| accept_key(black_box("dGhlIHNhbXBsZSBub25jZQ==")))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = frame_header, unmask, utf8_and_receiver, handshake
}
criterion_main!(benches);
