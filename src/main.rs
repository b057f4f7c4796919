//! The `loopchat` binary: command line and environment into a `Config`, the
//! logger, and the server's loop. Everything else is in the library.

use loopchat::config::{self, Command};
use loopchat::Server;
use std::process::ExitCode;

fn main() -> ExitCode {
    let rust_log = std::env::var("RUST_LOG").ok();
    let config = match config::parse_args(std::env::args().skip(1), rust_log.as_deref()) {
        Ok(Command::Run(config)) => *config,
        Ok(Command::Help) => {
            print!("{}", config::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("loopchat: {message}");
            eprintln!("Try 'loopchat --help' for the list of options.");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = simple_logger::SimpleLogger::new()
        .with_level(config.log_level)
        .init()
    {
        eprintln!("loopchat: cannot start logging: {e}");
    }
    let mut server = match Server::bind(config.clone()) {
        Ok(server) => server,
        Err(e) => {
            log::error!("cannot listen on {}: {e}", config.addr);
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = server.handle_signals() {
        log::warn!("SIGINT/SIGTERM will not shut down gracefully: {e}");
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("server loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}
