//! The comparison servers, each run as its own process by `--serve KIND PORT`: the raw
//! TCP echo and fan-out servers ([`raw`], the physical limits of one mio loop) and a
//! tokio-tungstenite chat server ([`tokio_chat`], what a Rust user would pick).

pub mod raw;
pub mod tokio_chat;
