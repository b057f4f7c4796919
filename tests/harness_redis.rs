//! The cluster tests' harness tested on its own: a Redis server of the test's
//! own (commands, SIGKILL and restart, SIGSTOP and SIGCONT, cleanup on drop),
//! the fault proxy (forward, blackhole, reset), and loopchat nodes with the chat
//! client. Without redis-server the Redis tests are skipped (failed under
//! `CI=true`).

mod common;
use common::node::{ChatClient, Node};
use common::proxy::FaultProxy;
use common::redis::{command_at, RedisServer};
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Generous: every wait here is for a condition, never a measured duration.
const DEADLINE: Duration = Duration::from_secs(10);

/// Short, for "nothing answers": a paused or blackholed server cannot answer at
/// all, so the length does not decide the outcome.
const SILENCE: Duration = Duration::from_millis(300);

const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// The state letter of `/proc/PID/status` ("S", "R", "T" for stopped, ...).
fn process_state(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("State:"))
        .map(|state| state.trim().chars().take(1).collect())
        .unwrap_or_default()
}

/// A raw connection with a read timeout, for RESP bytes by hand.
fn connect(addr: SocketAddr, read_timeout: Duration) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(read_timeout)).unwrap();
    stream
}

/// Reads once: `Ok(bytes)` (empty at end of stream), or the error.
fn read_some(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf)?;
    Ok(buf[..n].to_vec())
}

fn is_timeout(result: &std::io::Result<Vec<u8>>) -> bool {
    matches!(result, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

#[test]
fn redis_commands_render_replies() {
    let Some(redis) = RedisServer::start("redis_commands_render_replies") else {
        return;
    };
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
    assert_eq!(redis.command(&["PING"]), "PONG");
    assert_eq!(redis.command(&["SET", "a", "1"]), "OK");
    assert_eq!(redis.command(&["GET", "a"]), "1");
    assert_eq!(redis.command(&["GET", "missing"]), "(nil)");
    assert_eq!(redis.command(&["INCR", "n"]), "1");
    assert_eq!(redis.command(&["RPUSH", "l", "x", "y z"]), "2");
    assert_eq!(redis.command(&["LRANGE", "l", "0", "-1"]), "x\ny z");
    assert_eq!(redis.command(&["ZADD", "z", "1", "m1", "2", "m2"]), "2");
    assert_eq!(redis.command(&["ZCARD", "z"]), "2");
    let mut keys: Vec<String> = redis
        .command(&["KEYS", "*"])
        .lines()
        .map(String::from)
        .collect();
    keys.sort();
    assert_eq!(keys, ["a", "l", "n", "z"]);
    assert_eq!(redis.command(&["CONFIG", "SET", "timeout", "0"]), "OK");
    assert_eq!(redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]), "0");
    let error = redis.command(&["NOSUCHCOMMAND"]);
    assert!(error.starts_with("-ERR"), "{error}");
    // Nothing is persisted: no dump and no append-only file.
    assert_eq!(redis.command(&["CONFIG", "GET", "save"]), "save\n");
    assert_eq!(
        redis.command(&["CONFIG", "GET", "appendonly"]),
        "appendonly\nno"
    );
}

#[test]
fn redis_kill9_restart_pause_resume_and_drop() {
    let Some(mut redis) = RedisServer::start("redis_kill9_restart_pause_resume_and_drop") else {
        return;
    };
    let port = redis.port();
    assert_eq!(redis.command(&["SET", "a", "1"]), "OK");

    let first = redis.pid();
    redis.kill9();
    assert!(!redis.is_running());
    assert!(
        redis.try_command(&["PING"]).is_err(),
        "killed, yet answered"
    );
    redis.restart();
    assert_ne!(redis.pid(), first);
    assert_eq!(redis.port(), port);
    assert_eq!(redis.command(&["PING"]), "PONG");
    assert_eq!(redis.command(&["GET", "a"]), "(nil)", "nothing persisted");

    redis.pause();
    let pid = redis.pid();
    assert!(
        eventually(DEADLINE, || process_state(pid) == "T"),
        "not stopped: {}",
        process_state(pid)
    );
    assert!(
        command_at(redis.addr(), &["PING"], SILENCE).is_err(),
        "paused, yet answered"
    );
    redis.resume();
    assert_eq!(redis.command(&["PING"]), "PONG");

    // Dropped while paused: killed and waited for, its dir removed.
    let dir = redis.dir().to_path_buf();
    assert!(dir.is_dir());
    redis.pause();
    drop(redis);
    assert!(!dir.exists(), "{} left behind", dir.display());
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        command_at(addr, &["PING"], SILENCE).is_err(),
        "still answering after drop"
    );
}

#[test]
fn proxy_forwards_blackholes_and_resets() {
    let Some(redis) = RedisServer::start("proxy_forwards_blackholes_and_resets") else {
        return;
    };
    let proxy = FaultProxy::start(redis.addr());
    assert_eq!(
        proxy.url(),
        format!("redis://127.0.0.1:{}", proxy.addr().port())
    );
    assert_eq!(
        command_at(proxy.addr(), &["PING"], DEADLINE).unwrap(),
        "PONG"
    );
    assert_eq!(
        command_at(proxy.addr(), &["SET", "k", "v"], DEADLINE).unwrap(),
        "OK"
    );
    assert_eq!(
        redis.command(&["GET", "k"]),
        "v",
        "went through to the target"
    );

    // Blackholed: an open connection stays open and gets nothing; a new one is
    // accepted and hangs. Healed: both get their answers, nothing was lost.
    let mut open = connect(proxy.addr(), DEADLINE);
    open.write_all(PING).unwrap();
    assert_eq!(read_some(&mut open).unwrap(), b"+PONG\r\n");
    open.set_read_timeout(Some(SILENCE)).unwrap();
    proxy.blackhole();
    open.write_all(PING).unwrap();
    assert!(
        is_timeout(&read_some(&mut open)),
        "an answer through the blackhole"
    );
    let mut hanging = connect(proxy.addr(), SILENCE);
    hanging.write_all(PING).unwrap();
    assert!(
        is_timeout(&read_some(&mut hanging)),
        "a new connection got through"
    );
    assert!(command_at(proxy.addr(), &["PING"], SILENCE).is_err());
    proxy.forward();
    open.set_read_timeout(Some(DEADLINE)).unwrap();
    hanging.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(read_some(&mut open).unwrap(), b"+PONG\r\n");
    assert_eq!(read_some(&mut hanging).unwrap(), b"+PONG\r\n");
    assert_eq!(
        command_at(proxy.addr(), &["PING"], DEADLINE).unwrap(),
        "PONG"
    );

    // reset_all ends every current connection; new ones work.
    assert!(eventually(DEADLINE, || proxy.connections() == 2));
    proxy.reset_all();
    for stream in [&mut open, &mut hanging] {
        let ended = read_some(stream);
        assert!(
            matches!(&ended, Ok(bytes) if bytes.is_empty())
                || matches!(&ended, Err(e) if e.kind() == ErrorKind::ConnectionReset),
            "not closed by reset_all: {ended:?}"
        );
    }
    assert!(eventually(DEADLINE, || proxy.connections() == 0));
    assert_eq!(
        command_at(proxy.addr(), &["PING"], DEADLINE).unwrap(),
        "PONG"
    );
}

#[test]
fn node_serves_and_chats() {
    let node = Node::start(&[]);
    let (status, _, body) = get(node.addr(), "/");
    assert_eq!(status, 200);
    assert!(!body.is_empty());

    let mut ann = ChatClient::join(node.addr(), "harness", "ann");
    assert_eq!(json_field(ann.welcome(), "name"), Some("ann"));
    assert_eq!(json_field(ann.welcome(), "room"), Some("harness"));
    let mut bob = ChatClient::join(node.addr(), "harness", "bob b");
    assert_eq!(json_field(bob.welcome(), "name"), Some("bob b"));
    bob.say("hello from bob");
    let got = ann.wait_for(DEADLINE, |json| json_field(json, "type") == Some("message"));
    let got = got.unwrap_or_else(|| panic!("no message; seen {:?}", ann.seen));
    assert_eq!(json_field(&got, "from"), Some("bob b"));
    assert_eq!(ann.messages_texts(), ["hello from bob"]);
    assert!(
        ann.seen.len() >= 2,
        "the join notice came first: {:?}",
        ann.seen
    );
}

#[test]
fn node_log_and_kill9() {
    let mut node = Node::start(&["--log-level", "info"]);
    let chat = ChatClient::join(node.addr(), "logged", "cy");
    assert!(
        node.wait_for_log(DEADLINE, "connected"),
        "log: {}",
        node.log()
    );
    node.kill9();
    assert!(
        node.process.child.try_wait().unwrap().is_some(),
        "still running"
    );
    assert!(
        node.log().contains("connected"),
        "the log outlives the process"
    );
    assert!(TcpStream::connect(node.addr()).is_err(), "still listening");
    drop(chat);
}
