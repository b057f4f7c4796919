//! What the bench asks of the operating system: the open-files limit and the
//! parent-death signal (through rustix's safe calls), process figures read from /proc
//! (CPU time, run-queue wait, memory, the machine's steal time and load), CPU pinning
//! with `taskset`, and a free loopback port.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};

/// Raises this process's open-files soft limit to the hard limit; returns (soft, hard)
/// as now in force, "unlimited" as `u64::MAX` (RLIM_INFINITY).
pub fn raise_nofile_limit() -> (u64, u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if soft < hard {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return (hard, hard);
        }
    }
    (soft, hard)
}

/// The sum over a process's threads of one field of their `schedstat` (0: time on a
/// CPU, 1: time runnable but waiting for one; ns); `None` if no thread has one.
fn schedstat_sum(pid: u32, field: usize) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = 0u64;
    let mut any = false;
    for task in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) {
            if let Some(v) = s
                .split_whitespace()
                .nth(field)
                .and_then(|v| v.parse::<u64>().ok())
            {
                sum += v;
                any = true;
            }
        }
    }
    any.then_some(sum)
}

/// CPU time (user + system) of a whole process, in nanoseconds. Uses the per-thread
/// `schedstat` (ns resolution) when present, else utime+stime from /proc/PID/stat.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    schedstat_sum(pid, 0).or_else(|| stat_cpu_ns(pid))
}

/// utime + stime from /proc/PID/stat, in nanoseconds (10 ms resolution).
fn stat_cpu_ns(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // fields 14 and 15 of stat are f[11], f[12] after "pid (comm) "
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000_000) // CLK_TCK = 100 on Linux
}

/// Time the process's threads spent runnable but waiting for a CPU (ns): the second
/// field of schedstat. Non-zero means something else ran on "our" core (noise).
pub fn wait_ns(pid: u32) -> Option<u64> {
    schedstat_sum(pid, 1)
}

/// The machine's (steal, total) CPU time in clock ticks, from the first line of
/// /proc/stat. Steal is time the hypervisor gave this VM's CPUs to someone else:
/// noise that no process's run-queue wait shows.
pub fn steal_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    Some((*fields.get(7)?, fields.iter().take(8).sum()))
}

/// A figure in KiB from /proc/PID/status, e.g. `status_kb(pid, "VmRSS:")`.
pub fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The machine's count of connections dropped because a listen queue was full
/// (`ListenOverflows` in /proc/net/netstat: every listener, not only ours).
pub fn listen_overflows() -> Option<u64> {
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut tcp_ext = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (tcp_ext.next()?, tcp_ext.next()?);
    let at = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// The 1, 5 and 15 minute load averages, or "?".
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Servers get SIGKILL if the bench process dies without unwinding (SIGKILL,
/// `timeout`, ...), so that no server outlives the run; `Server::drop` covers the
/// normal and the panic paths.
#[cfg(target_os = "linux")]
pub fn die_with_parent(cmd: &mut Command) {
    use rustix::process::{set_parent_process_death_signal, Signal};
    use std::os::unix::process::CommandExt;
    // SAFETY: `pre_exec` runs the closure in the child between fork and exec, where
    // only async-signal-safe calls are sound. The closure captures nothing, allocates
    // nothing and takes no lock: it makes one prctl(PR_SET_PDEATHSIG) system call
    // through rustix, whose error it ignores (as a failed prctl leaves the child as it
    // was, only without the signal).
    unsafe {
        cmd.pre_exec(|| {
            let _ = set_parent_process_death_signal(Some(Signal::KILL));
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub fn die_with_parent(_cmd: &mut Command) {}

/// Whether `taskset` (util-linux) can be run.
pub fn have_taskset() -> bool {
    Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Pins every thread of this process to CPU `cpu` with `taskset`; true if it worked.
pub fn pin_this_process(cpu: u32) -> bool {
    let me = std::process::id().to_string();
    Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &me])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A command that runs `prog args`, pinned to CPU `cpu` through `taskset` if given one.
pub fn command_on_cpu(prog: &Path, args: &[String], cpu: Option<u32>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(prog).args(args);
            c
        }
        None => {
            let mut c = Command::new(prog);
            c.args(args);
            c
        }
    }
}

/// Starts a non-blocking TCP connection to `remote` from the address `local` (its
/// port picked by the kernel when binding). Connecting without a bind leaves the
/// kernel to pick a port among those not yet connected to `remote`, a search that
/// grows with the connections to it (`__inet_hash_connect`: at 15,000 connections
/// to one address, over half of the client's CPU time went there); from a source
/// address of its own each port is found at once.
pub fn connect_from(local: IpAddr, remote: SocketAddr) -> io::Result<mio::net::TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(remote),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    let context = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    let from = SocketAddr::new(local, 0);
    socket
        .bind(&from.into())
        .map_err(|e| context(&format!("bind {from}"), e))?;
    match socket.connect(&remote.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) => {}
        Err(e) => {
            let bound = socket.local_addr().ok().and_then(|a| a.as_socket());
            return Err(context(&format!("from {bound:?}"), e));
        }
    }
    Ok(mio::net::TcpStream::from_std(socket.into()))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
