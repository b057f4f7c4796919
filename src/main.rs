//! The `loopchat` binary: command line and environment into a `Config`, the
//! logger, and the server's loop. Everything else is in the library.
//!
//! What it prints whatever the log level: the listening address on stdout once
//! bound, and on stderr a bad argument or TLS certificate and key that cannot
//! be served (exit 2, before binding), or why it cannot listen or the loop
//! failed (exit 1).

use loopchat::config::{self, Command};
use loopchat::tls::Identity;
use loopchat::Server;
use std::io::{self, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let rust_log = match std::env::var("RUST_LOG") {
        Ok(value) => Some(value),
        Err(std::env::VarError::NotPresent) => None,
        // Not UTF-8: passed on as such, so it is reported rather than ignored.
        Err(std::env::VarError::NotUnicode(value)) => Some(value.to_string_lossy().into_owned()),
    };
    let config = match config::parse_args(std::env::args().skip(1), rust_log.as_deref()) {
        Ok(Command::Run(config)) => *config,
        Ok(Command::Help) => {
            print!("{}", config::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("loopchat {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("loopchat: {message}");
            eprintln!("Try 'loopchat --help' for the list of options.");
            return ExitCode::from(2);
        }
    };
    // --tls-cert and --tls-key: read and checked before anything else, so a bad
    // file is a start-up error that names it.
    let identity = match Identity::from_config(&config) {
        Ok(identity) => identity,
        Err(message) => {
            eprintln!("loopchat: {message}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = simple_logger::SimpleLogger::new()
        .with_level(config.log_level)
        .init()
    {
        eprintln!("loopchat: cannot start logging: {e}");
    }
    let mut server = match Server::bind_with(config.clone(), identity) {
        Ok(server) => server,
        Err(e) => {
            let hint = match e.kind() {
                io::ErrorKind::AddrInUse => {
                    " (another program, or another loopchat, is using this port; \
                     choose another with --addr)"
                }
                io::ErrorKind::PermissionDenied => {
                    " (ports below 1024 need privileges; choose another with --addr)"
                }
                io::ErrorKind::AddrNotAvailable => {
                    " (no interface of this machine has that address; choose another with --addr)"
                }
                _ => "",
            };
            eprintln!("loopchat: cannot listen on {}: {e}{hint}", config.addr);
            return ExitCode::FAILURE;
        }
    };
    // Before the line below, so that whoever waits for it may signal at once.
    if let Err(e) = server.handle_signals() {
        log::warn!(
            "signals will not be handled (no graceful SIGINT/SIGTERM, no SIGHUP reload): {e}"
        );
    }
    // On stdout and not in the log, so that it shows at every log level; a closed
    // stdout is no reason to stop.
    let _ = writeln!(
        io::stdout(),
        "loopchat listening on {}://{}/",
        if server.is_tls() { "https" } else { "http" },
        server.local_addr()
    );
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loopchat: server loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}
