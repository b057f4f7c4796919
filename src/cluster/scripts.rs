//! The Lua scripts a node runs in Redis (`EVALSHA`, loaded with `SCRIPT LOAD`
//! at every link-up): one script call per chat event, each atomic, so that a
//! room's sequence number, its history list, its presence set and the
//! `PUBLISH` that tells every node can never disagree.
//!
//! Keys of room `R` all carry the hash tag `{R}` (one Redis Cluster slot):
//! `lc:{R}:meta` (HASH: `e` the room's epoch, `s` its last sequence number),
//! `lc:{R}:hist` (LIST of the last `--history` message envelopes),
//! `lc:{R}:pz` (ZSET: member id → expire-at, in Redis's own milliseconds),
//! `lc:{R}:pn` (HASH: member id → display name). Every write renews the keys'
//! time to live (`ROOM_TTL_SECONDS`), so abandoned rooms vanish by themselves.
//!
//! What each script publishes on the room's channel `lc:{R}` is an envelope
//! (`envelope.rs`): kind, epoch, sequence number, member id, the room's count,
//! the origin's tag, the member's name, then the JSON every client gets.
//! Join and leave notices are written here, in Lua, because only Redis knows
//! the cluster-wide count (`ZCARD`) at the moment the notice takes its place
//! in the room's order.

/// How long an untouched room's keys live in Redis.
pub(crate) const ROOM_TTL_SECONDS: u32 = 86_400;

/// Helpers every script starts with.
const PRELUDE: &str = r#"
local meta, hist, pz, pn = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local channel, epoch_candidate, tag = ARGV[1], ARGV[2], ARGV[3]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
redis.call('HSETNX', meta, 'e', epoch_candidate)
local epoch = redis.call('HGET', meta, 'e')
local function publish(kind, id, name, online, json)
  local s = redis.call('HINCRBY', meta, 's', 1)
  local env = kind .. ' ' .. epoch .. ' ' .. string.format('%d', s) .. ' ' .. id .. ' '
    .. string.format('%d', online) .. ' ' .. tag .. ' ' .. #name .. ':' .. name .. json
  redis.call('PUBLISH', channel, env)
  return s, env
end
local function notice(kind, id, name, online)
  return '{"type":"' .. kind .. '","id":' .. id .. ',"name":' .. cjson.encode(name)
    .. ',"online":' .. string.format('%d', online) .. ',"ts":' .. string.format('%d', now_ms()) .. '}'
end
local function leave(id)
  local name = redis.call('HGET', pn, id) or ''
  if redis.call('ZREM', pz, id) == 0 then return 0 end
  redis.call('HDEL', pn, id)
  local online = redis.call('ZCARD', pz)
  return publish('l', id, name, online, notice('leave', id, name, online))
end
local function sweep()
  local expired = redis.call('ZRANGEBYSCORE', pz, '-inf', string.format('%d', now_ms()))
  for _, id in ipairs(expired) do leave(id) end
end
local function keep_alive()
  for _, key in ipairs(KEYS) do redis.call('EXPIRE', key, ARGV[#ARGV]) end
end
"#;

/// Join, resynchronise or refresh: `ARGV` = channel, epoch candidate, tag,
/// presence TTL in ms, history wanted after this sequence number (`-1`: none),
/// member-list limit (names returned when the room has at most this many), then
/// one `id name` pair per local member, then the keys' TTL. Each member's
/// expire-at is pushed forward; a member Redis did not have (a newcomer, or
/// one swept while its node was cut off) gets a join notice. Expired members of
/// other nodes are swept first, each with one leave notice.
///
/// Returns `{epoch, seq_before, history, people}`: the sequence number before
/// this script's own notices, the history envelopes after the requested
/// sequence number (oldest first), and `id, name, id, name, ...` when the room
/// is small enough to list (else an empty array).
const SYNC_BODY: &str = r#"
sweep()
local seq_before = tonumber(redis.call('HGET', meta, 's') or '0')
local expire_at = now_ms() + tonumber(ARGV[4])
for i = 7, #ARGV - 2, 2 do
  local id, name = ARGV[i], ARGV[i + 1]
  if redis.call('ZADD', pz, string.format('%d', expire_at), id) == 1 then
    redis.call('HSET', pn, id, name)
    local online = redis.call('ZCARD', pz)
    publish('j', id, name, online, notice('join', id, name, online))
  end
end
local history = {}
local after = tonumber(ARGV[5])
if after >= 0 then
  local entries = redis.call('LRANGE', hist, 0, -1)
  for _, env in ipairs(entries) do
    local s = tonumber(string.match(env, '^%a %S+ (%d+) '))
    if s ~= nil and s > after then table.insert(history, env) end
  end
end
local people = false
if redis.call('ZCARD', pz) <= tonumber(ARGV[6]) then
  people = redis.call('HGETALL', pn)
end
keep_alive()
return {epoch, seq_before, history, people}
"#;

/// A room's messages and renames of one loop iteration, in one call (the
/// script's own cost, about 10 µs, is paid once per batch, not per message):
/// `ARGV` = channel, epoch candidate, the node's number, the first post's
/// number, the count, the history length, then four per post (kind `m` or `r`,
/// member id, name, the JSON clients get), then the keys' TTL. Each post gets
/// the room's next sequence number; the call makes one `PUBLISH` of all its
/// envelopes, each preceded by its length (`envelope::split_batch`), and one
/// `RPUSH` of its messages to the history list (then capped); a rename updates
/// the member's name. Returns `{epoch, last seq, receivers}` (`receivers` counts
/// the nodes subscribed: 0 means not even the sender's own node is).
const POST_BODY: &str = r#"
local node, first, count, keep = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local online = string.format('%d', redis.call('ZCARD', pz))
local s0 = redis.call('HINCRBY', meta, 's', count) - count
local kept, parts = {}, {}
for i = 0, count - 1 do
  local kind, id, name, json = ARGV[7 + 4 * i], ARGV[8 + 4 * i], ARGV[9 + 4 * i], ARGV[10 + 4 * i]
  if kind == 'r' and redis.call('HEXISTS', pn, id) == 1 then
    redis.call('HSET', pn, id, name)
  end
  local env = kind .. ' ' .. epoch .. ' ' .. string.format('%d', s0 + i + 1) .. ' ' .. id .. ' '
    .. online .. ' ' .. node .. '.' .. string.format('%d', first + i) .. ' ' .. #name .. ':' .. name .. json
  if kind == 'm' and keep > 0 then kept[#kept + 1] = env end
  parts[#parts + 1] = #env .. ' ' .. env
end
if #kept > 0 then
  redis.call('RPUSH', hist, unpack(kept))
  redis.call('LTRIM', hist, -keep, -1)
end
local receivers = redis.call('PUBLISH', channel, table.concat(parts))
keep_alive()
return {epoch, s0 + count, receivers}
"#;

/// A member leaves: `ARGV` = channel, epoch candidate, tag, member id, then the
/// keys' TTL. Only the call that removes the member publishes its leave
/// notice, so a member swept by another node is never announced twice.
/// Returns the notice's sequence number, or 0 if the member was gone already.
const LEAVE_BODY: &str = r#"
local s = leave(ARGV[4])
keep_alive()
return s
"#;

/// Claims this node's number, from which its member ids are made: `KEYS[1]` =
/// `lc:nodes`, `ARGV[1]` = the number the node has (0: none yet). A node
/// without one gets the next; a node that has one raises the counter to it,
/// so that after a Redis restart without persistence a new node does not get
/// the number of one still running.
pub(crate) const CLAIM_NODE: &str = r#"
local mine = tonumber(ARGV[1])
if mine == 0 then return redis.call('INCR', KEYS[1]) end
if mine < 1048576 and tonumber(redis.call('GET', KEYS[1]) or '0') < mine then
  redis.call('SET', KEYS[1], ARGV[1])
end
return mine
"#;

/// The scripts a node loads, each as its whole source.
pub(crate) struct Scripts {
    pub sync: String,
    pub post: String,
    pub leave: String,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            sync: format!("{PRELUDE}{SYNC_BODY}"),
            post: format!("{PRELUDE}{POST_BODY}"),
            leave: format!("{PRELUDE}{LEAVE_BODY}"),
        }
    }
}

/// The SHA1 (hex) Redis names a script by, for `EVALSHA`.
pub(crate) fn sha1_hex(source: &str) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(source.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
