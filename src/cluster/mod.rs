//! Rooms shared by several loopchat processes through Redis (the `redis` feature).

// Used by the cluster link (next commit).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod resp;
