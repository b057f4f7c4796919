//! Criterion microbenchmarks of loopchat's sans-IO protocol code:
//! frame header decode/encode, unmasking, the streaming message assembler with its
//! UTF-8 validation, and the handshake accept key.
//!
//! `cargo bench --bench codec` (short measurement times: the whole run is < 1 min).
//! `cargo bench --bench codec -- mask` runs only the benchmarks whose id contains "mask".
//! `cargo bench --bench codec -- deflate` runs only the permessage-deflate groups,
//! after two tables (wire bytes by size and level; the fastest ns per compress and
//! inflate, steadier than criterion's means on a busy machine). A filter that
//! matches no benchmark, e.g. `-- deflate_tables`, prints only the tables.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use loopchat::frame::{apply_mask, decode_header, encode_header, OpCode};
use loopchat::handshake::accept_key;
use loopchat::message::{Event, Receiver};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

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

// ---- permessage-deflate (RFC 7692) ---------------------------------------------
//
// `loopchat::deflate` is private, so these benchmarks call flate2 (zlib-rs
// backend, a dev-dependency) directly with the settings of
// src/deflate/codec.rs: raw DEFLATE with a 15-bit window, the compressor
// reset before every message (no context takeover), a sync flush, and the
// trailing `00 00 ff ff` stripped; inflating appends those four bytes back to
// a reset raw inflater. The output buffers are reused, as the server's are.

/// What §7.2.1 strips from every compressed message.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Chat-like English prose, cut to length for the `text` of a chat message.
const PROSE: &str = "Morning all! Did anyone manage to get the build running on the new laptop \
yesterday? I tried twice and it kept failing at the linker step, something about a missing \
library that I'm fairly sure is installed. Oh, that one. You need the development package as \
well, not just the runtime. It took me half an hour to figure that out last month. Thanks, I'll \
try that after lunch. By the way, are we still meeting at three to go over the release notes? \
Yes, three o'clock in the small room, unless it's booked again, in which case we'll just use the \
call link. I'll bring the list of open issues; there are eleven left and at least four of them \
are really the same bug reported by different people. The one about reconnecting after the \
server restarts is the most annoying, because the page looks online but nothing arrives until \
you reload. Has anybody been able to reproduce that reliably? I saw it once on my phone when \
the train went through the tunnel near the station, and then never again. Maybe it depends on \
how long the connection is gone: if it's short, the browser never notices the socket died. \
That would explain why it only happens on mobile. We could send a ping every thirty seconds and \
drop the connection if nothing comes back, which is what most servers do anyway. Good idea. I \
think the server already has a heartbeat option, we just never turned it on in production. \
Let's try it on the staging machine this afternoon and watch the logs for a day or two before \
we change anything else. Sounds like a plan. Separately, the design team asked whether we can \
show when someone is typing. Personally I find those indicators distracting, but I understand \
why people like them, especially in small rooms where the conversation moves slowly. It would \
mean a lot of tiny messages, though, one every few keystrokes for everyone in the room, which \
is exactly the kind of traffic that compression does nothing for. True, but they are small \
enough that it hardly matters. The big messages are the pasted logs and the long explanations \
like this one, and those compress very well because they repeat the same words over and over. \
Speaking of which, I pasted the full error output into the ticket, all four hundred lines of \
it, sorry about that. No problem, it's useful. I'll read it properly tonight when the house is \
quiet. Also, a reminder that Friday is the last day to submit holiday requests for December, \
and the office will be closed between the twenty-fourth and the second of January. If you \
need access to the test machines during that week, tell me before Friday and I'll make sure \
your account still works from home. Has the new coffee machine arrived yet, by the way? It was \
supposed to come on Monday, then Wednesday, and now apparently next week. I've stopped \
believing the delivery dates. Fair enough. Right, back to work. I'll post again once the \
build is green, or if it breaks in a new and interesting way, which seems more likely. Good \
luck, and remember to clear the cache first; half of my problems last week were stale files \
from an older version that the build system refused to rebuild. One more thing before I \
forget: the customer in Lisbon wrote again about the export feature. They want the files \
split by month instead of one huge spreadsheet, and they asked if the dates could follow the \
European format. Neither sounds hard, but we should check with Maria first, since she wrote \
most of that code and knows where the surprises are. I can ask her tomorrow; she is working \
from the other office this week and usually answers messages in the evening. Also, whoever \
borrowed the spare monitor from the meeting room, please bring it back, we need it for the \
demo on Thursday. Apologies, that was me, it's under my desk. I'll return it first thing. \
No rush. And if anyone wants to join the running group on Wednesday evenings, we meet by the \
bridge at half past six and go along the river for about five kilometres, slowly, with a stop \
at the bakery on the way back, which is honestly the main reason most of us go at all.";

/// A chat `message` frame's JSON, as src/chat.rs makes it, exactly `len` bytes.
fn chat_json(len: usize) -> Vec<u8> {
    let head = "{\"type\":\"message\",\"id\":12,\"from\":\"ann\",\"text\":\"";
    let tail = "\",\"ts\":1764580123456,\"room\":\"lobby\"}";
    let room = len - head.len() - tail.len();
    assert!(room <= PROSE.len(), "no prose for {len} bytes");
    let json = format!("{head}{}{tail}", &PROSE[..room]);
    assert_eq!(json.len(), len);
    json.into_bytes()
}

/// An echo payload of the load bench (benches/load/payload.rs): 31 bytes of hex
/// header (nonce, connection, sequence, time, checksum) and a byte of filler.
fn echo_payload() -> Vec<u8> {
    let payload = b"3fa2000170000042000001c9b2e1d4ab".to_vec();
    assert_eq!(payload.len(), 32);
    payload
}

/// The loop's compressor, at one level, as src/deflate/codec.rs drives it.
struct Deflater {
    compress: Compress,
}

impl Deflater {
    fn new(level: u32) -> Self {
        Deflater {
            compress: Compress::new_with_window_bits(Compression::new(level), false, 15),
        }
    }

    /// Resets, compresses `message` into `out` (cleared), strips the tail.
    fn compress(&mut self, message: &[u8], out: &mut Vec<u8>) {
        out.clear();
        self.compress.reset();
        out.reserve(message.len() + message.len() / 1000 + 64);
        let mut consumed = 0;
        loop {
            let before = self.compress.total_in();
            self.compress
                .compress_vec(&message[consumed..], out, FlushCompress::Sync)
                .expect("deflate");
            consumed += (self.compress.total_in() - before) as usize;
            if consumed == message.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        if out.ends_with(&SYNC_TAIL) {
            out.truncate(out.len() - SYNC_TAIL.len());
        }
    }
}

/// Resets `inflater` and inflates `compressed` plus the tail into `out`
/// (cleared, with room for the whole message).
fn inflate(inflater: &mut Decompress, compressed: &[u8], out: &mut Vec<u8>) {
    out.clear();
    inflater.reset(false);
    for input in [compressed, &SYNC_TAIL[..]] {
        let before = inflater.total_in();
        inflater
            .decompress_vec(input, out, FlushDecompress::Sync)
            .expect("inflate");
        assert_eq!((inflater.total_in() - before) as usize, input.len());
    }
}

/// A server frame's header length for a payload of `len` bytes.
fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    }
}

/// The messages of the deflate groups: name and bytes.
fn deflate_payloads() -> Vec<(String, Vec<u8>)> {
    let mut payloads = vec![("echo_32B".to_string(), echo_payload())];
    for len in [100, 1024, 4096] {
        payloads.push((format!("chat_{}", human(len)), chat_json(len)));
    }
    payloads
}

/// Prints, once, the bytes on the wire (frame header included) of each
/// message plain and compressed at levels 1, 6 and 9, over more sizes than
/// are timed, to find where compression starts to pay.
fn print_wire_bytes() {
    let mut out = Vec::new();
    let mut deflaters = [
        Deflater::new(1),
        Deflater::new(2),
        Deflater::new(6),
        Deflater::new(9),
    ];
    println!("\npermessage-deflate wire bytes (frame header + payload; no context takeover)");
    println!(
        "{:<14} {:>7} {:>7} {:>7} {:>7} {:>7}   {:>8} {:>8}",
        "message", "plain", "L1", "L2", "L6", "L9", "L1/plain", "L6/plain"
    );
    let mut rows: Vec<(String, Vec<u8>)> = vec![("echo_32B".into(), echo_payload())];
    for len in [100, 128, 160, 200, 256, 384, 512, 1024, 2048, 4096] {
        rows.push((format!("chat_{len}B"), chat_json(len)));
    }
    for (name, message) in rows {
        let plain = header_len(message.len()) + message.len();
        let mut wire = [0usize; 4];
        for (deflater, bytes) in deflaters.iter_mut().zip(wire.iter_mut()) {
            deflater.compress(&message, &mut out);
            *bytes = header_len(out.len()) + out.len();
        }
        let [l1, l2, l6, l9] = wire;
        println!(
            "{name:<14} {plain:>7} {l1:>7} {l2:>7} {l6:>7} {l9:>7}   {:>8.2} {:>8.2}",
            l1 as f64 / plain as f64,
            l6 as f64 / plain as f64
        );
    }
    println!();
}

/// The fastest mean time of `f` over many short batches, in ns. On a shared
/// machine a batch that ran without being preempted is the figure of the code
/// itself; criterion's means below include the neighbours' share.
fn min_ns_per_op(mut f: impl FnMut()) -> f64 {
    let batch = Duration::from_micros(200);
    let mut iters = 1u32;
    loop {
        let start = std::time::Instant::now();
        for _ in 0..iters {
            f();
        }
        if start.elapsed() >= batch || iters >= 1 << 20 {
            break;
        }
        iters *= 2;
    }
    (0..400)
        .map(|_| {
            let start = std::time::Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(iters)
        })
        .fold(f64::MAX, f64::min)
}

/// Prints, once, the summary table: wire bytes plain and compressed, and the
/// fastest ns per compress (reset included) at levels 1, 2 and 6 and per
/// inflate (of level 1's and level 6's output).
fn print_deflate_summary() {
    let mut out = Vec::with_capacity(64 * 1024);
    let mut plain = Vec::with_capacity(64 * 1024);
    let mut inflater = Decompress::new(false);
    let mut deflaters = [Deflater::new(1), Deflater::new(2), Deflater::new(6)];
    println!("permessage-deflate cost (fastest of 400 batches of ~200 us; ns per message)");
    println!(
        "{:<11} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "message", "plain", "L1", "L2", "L6", "comp L1", "comp L2", "comp L6", "infl L1", "infl L6"
    );
    let mut reset = [0f64; 3];
    for (deflater, ns) in deflaters.iter_mut().zip(reset.iter_mut()) {
        *ns = min_ns_per_op(|| deflater.compress.reset());
    }
    let inflate_reset = min_ns_per_op(|| inflater.reset(false));
    println!(
        "{:<11} {:>6} {:>6} {:>6} {:>6} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.0}",
        "reset only", "", "", "", "", reset[0], reset[1], reset[2], inflate_reset, inflate_reset
    );
    let mut rows: Vec<(String, Vec<u8>)> = vec![("echo_32B".into(), echo_payload())];
    for len in [100, 256, 512, 1024, 4096] {
        rows.push((format!("chat_{}", human(len)), chat_json(len)));
    }
    for (name, message) in rows {
        let mut wire = [0usize; 3];
        let mut compress_ns = [0f64; 3];
        let mut inflate_ns = [0f64; 3];
        for (i, deflater) in deflaters.iter_mut().enumerate() {
            deflater.compress(&message, &mut out);
            wire[i] = header_len(out.len()) + out.len();
            let compressed = out.clone();
            compress_ns[i] = min_ns_per_op(|| {
                deflater.compress(black_box(&message), &mut out);
            });
            if i != 1 {
                inflate_ns[i] = min_ns_per_op(|| {
                    inflate(&mut inflater, black_box(&compressed), &mut plain);
                });
            }
        }
        println!(
            "{name:<11} {:>6} {:>6} {:>6} {:>6} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.0}",
            header_len(message.len()) + message.len(),
            wire[0],
            wire[1],
            wire[2],
            compress_ns[0],
            compress_ns[1],
            compress_ns[2],
            inflate_ns[0],
            inflate_ns[2]
        );
    }
    println!();
}

fn deflate(c: &mut Criterion) {
    static PRINTED: std::sync::Once = std::sync::Once::new();
    PRINTED.call_once(|| {
        print_wire_bytes();
        print_deflate_summary();
    });

    let payloads = deflate_payloads();
    let mut out = Vec::with_capacity(64 * 1024);
    let mut g = c.benchmark_group("deflate_compress");
    // Levels 1 and 6 are the candidates for the default; 2 is zlib-rs's first
    // level with dynamic Huffman trees (its level 1 is "quick": fixed trees only).
    for level in [1, 2, 6] {
        let mut deflater = Deflater::new(level);
        // The fixed cost in every compression: the reset (no context takeover).
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new(format!("L{level}"), "reset_only"), |b| {
            b.iter(|| deflater.compress.reset())
        });
        for (name, message) in &payloads {
            g.throughput(Throughput::Bytes(message.len() as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("L{level}"), name),
                message,
                |b, m| {
                    b.iter(|| {
                        deflater.compress(black_box(m), &mut out);
                        out.len()
                    })
                },
            );
        }
    }
    g.finish();

    let mut g = c.benchmark_group("deflate_inflate");
    let mut inflater = Decompress::new(false);
    let mut plain = Vec::with_capacity(64 * 1024);
    g.throughput(Throughput::Elements(1));
    g.bench_function("reset_only", |b| b.iter(|| inflater.reset(false)));
    for level in [1, 6] {
        let mut deflater = Deflater::new(level);
        for (name, message) in &payloads {
            deflater.compress(message, &mut out);
            let compressed = out.clone();
            inflate(&mut inflater, &compressed, &mut plain);
            assert_eq!(&plain, message, "round trip");
            g.throughput(Throughput::Bytes(message.len() as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("from_L{level}"), name),
                &compressed,
                |b, data| {
                    b.iter(|| {
                        inflate(&mut inflater, black_box(data), &mut plain);
                        plain.len()
                    })
                },
            );
        }
    }
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
    targets = frame_header, unmask, utf8_and_receiver, handshake, deflate
}
criterion_main!(benches);
