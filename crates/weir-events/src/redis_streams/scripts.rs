//! The Lua scripts of the Redis Streams queue: each queue operation is one atomic script
//! (one round trip), so several nodes can share a queue.

use redis::Script;

/// ARGV: prefix, now, then (id, topic, key, headers, body) per event. A known id answers
/// its first sequence number (publishing is idempotent by id).
pub(super) const PUBLISH: &str = r"
local p, now = ARGV[1], ARGV[2]
local out = {}
for i = 3, #ARGV, 5 do
  local id, topic = ARGV[i], ARGV[i + 1]
  local old = redis.call('HGET', p .. 'ids', id)
  if old then
    out[#out + 1] = tonumber(string.match(old, '^(%d+)'))
  else
    local seq = redis.call('INCR', p .. 'seq')
    redis.call('XADD', p .. 't:' .. topic, seq .. '-0', 'id', id, 'k', ARGV[i + 2],
      'h', ARGV[i + 3], 'b', ARGV[i + 4], 'c', now)
    redis.call('ZADD', p .. 'idx:' .. topic, seq, seq)
    redis.call('ZADD', p .. 'time:' .. topic, now, seq)
    redis.call('HSET', p .. 'ids', id, seq .. ' ' .. topic)
    out[#out + 1] = seq
  end
end
return out
";

/// Shared by the scripts below: the subscription's keys, or an error if there is none.
pub(super) const PRELUDE: &str = r"
local p, sub = ARGV[1], ARGV[2]
local topic = redis.call('HGET', p .. 's:' .. sub, 'topic')
if not topic then return redis.error_reply('NOSUB no such subscription') end
local stream = p .. 't:' .. topic
local due, lease, owed = p .. 'due:' .. sub, p .. 'lease:' .. sub, p .. 'owed:' .. sub
local att, dead, why = p .. 'att:' .. sub, p .. 'dead:' .. sub, p .. 'why:' .. sub
-- An event's fields and topic: in the topic read now, or in one the subscription read
-- before it moved (what it still owed there is delivered).
local function entry(seq)
  local e = redis.call('XRANGE', stream, seq .. '-0', seq .. '-0')
  if #e > 0 then return e[1][2], topic end
  for _, t in ipairs(redis.call('SMEMBERS', p .. 'was:' .. sub)) do
    e = redis.call('XRANGE', p .. 't:' .. t, seq .. '-0', seq .. '-0')
    if #e > 0 then return e[1][2], t end
  end
  return nil
end
local function field(f, name)
  for i = 1, #f, 2 do if f[i] == name then return f[i + 1] end end
  return ''
end
-- Per-key ordering: a sorted set per key of its open deliveries; only the first is due.
local ordered = redis.call('HGET', p .. 's:' .. sub, 'ordered') == '1'
local function kz(k) return p .. 'kz:' .. sub .. ':' .. k end
local function keyof(seq)
  local f = entry(seq)
  if not f then return nil end
  local k = field(f, 'k')
  if string.sub(k, 1, 1) == '1' then return string.sub(k, 2) end
  return nil
end
-- Whether seq may be delivered now (ordered: it is the first open one of its key); a
-- later one is noted and waits.
local function admit(seq, k)
  if not ordered or not k then return true end
  redis.call('ZADD', kz(k), seq, seq)
  return redis.call('ZRANGE', kz(k), 0, 0)[1] == tostring(seq)
end
-- seq is done (delivered or dead): the next one of its key falls due.
local function release(seq)
  if not ordered then return end
  local k = keyof(seq)
  if not k then return end
  redis.call('ZREM', kz(k), seq)
  local nxt = redis.call('ZRANGE', kz(k), 0, 0)[1]
  if nxt and not redis.call('ZSCORE', lease, nxt) then redis.call('ZADD', due, 0, nxt) end
end
local function last_delivered()
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local name, last
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] end
      if g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    if name == sub then return last end
  end
  return '0-0'
end
";

/// ARGV: prefix, subscription, now, lease until, max, token. Due retries and expired leases
/// first, then new events through the group. Answers {seq, attempt, id, key, headers, body,
/// created, topic} per event. The token names the call: the same token again (the answer
/// to the first was lost with the connection) answers the events that call leased, where
/// they are still leased, instead of leaving them leased to nobody until the lease ends.
pub(super) const LEASE: &str = r"
local now, untl, max = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local took = p .. 'took:' .. sub .. ':' .. ARGV[6]
local out = {}
local function give(seq, attempt)
  local f, t = entry(seq)
  if not f then
    -- Trimmed by retention: nothing left to deliver.
    redis.call('ZREM', lease, seq); redis.call('ZREM', due, seq); redis.call('ZREM', owed, seq)
    redis.call('HDEL', att, seq)
    return
  end
  out[#out + 1] = {tonumber(seq), attempt, field(f, 'id'), field(f, 'k'), field(f, 'h'),
    field(f, 'b'), field(f, 'c'), t}
end
local before = redis.call('LRANGE', took, 0, -1)
if #before > 0 then
  for _, s in ipairs(before) do
    if redis.call('ZSCORE', lease, s) then give(s, tonumber(redis.call('HGET', att, s) or 1)) end
  end
  return out
end
local again = redis.call('ZRANGEBYSCORE', lease, '-inf', now, 'LIMIT', 0, max)
if #again < max then
  for _, s in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, max - #again)) do
    again[#again + 1] = s
  end
end
table.sort(again, function(a, b) return tonumber(a) < tonumber(b) end)
for _, s in ipairs(again) do
  redis.call('ZREM', due, s)
  redis.call('ZADD', lease, untl, s)
  give(s, redis.call('HINCRBY', att, s, 1))
end
local room = max - #again
if room > 0 then
  local got = redis.call('XREADGROUP', 'GROUP', sub, 'weir', 'COUNT', room, 'NOACK',
    'STREAMS', stream, '>')
  if got then
    for _, e in ipairs(got[1][2]) do
      local seq = string.match(e[1], '^(%d+)')
      local f = e[2]
      local k = field(f, 'k')
      redis.call('ZADD', owed, seq, seq)
      if admit(seq, string.sub(k, 1, 1) == '1' and string.sub(k, 2) or nil) then
        redis.call('ZADD', lease, untl, seq)
        redis.call('HSET', att, seq, 1)
        out[#out + 1] = {tonumber(seq), 1, field(f, 'id'), k, field(f, 'h'),
          field(f, 'b'), field(f, 'c'), topic}
      else
        redis.call('HSET', att, seq, 0)
      end
    end
  end
end
if #out > 0 then
  for _, o in ipairs(out) do redis.call('RPUSH', took, o[1]) end
  redis.call('PEXPIREAT', took, untl)
end
return out
";

/// ARGV: prefix, subscription, new topic, now. Moves the subscription: what its group had
/// not handed out of the old topic becomes due deliveries, and a group on the new topic
/// reads from its end. Answers 1 when it moved.
pub(super) const MOVE: &str = r"
local to, now = ARGV[3], ARGV[4]
if topic == to then return 0 end
local got = redis.pcall('XREADGROUP', 'GROUP', sub, 'weir', 'COUNT', 1000000, 'NOACK',
  'STREAMS', stream, '>')
if type(got) == 'table' and got[1] then
  for _, e in ipairs(got[1][2]) do
    local seq = string.match(e[1], '^(%d+)')
    local k = field(e[2], 'k')
    redis.call('ZADD', owed, seq, seq)
    redis.call('HSET', att, seq, 0)
    if admit(seq, string.sub(k, 1, 1) == '1' and string.sub(k, 2) or nil) then
      redis.call('ZADD', due, now, seq)
    end
  end
end
redis.pcall('XGROUP', 'DESTROY', stream, sub)
redis.call('SADD', p .. 'was:' .. sub, topic)
redis.call('SREM', p .. 'was:' .. sub, to)
redis.call('SREM', p .. 'subs:' .. topic, sub)
redis.call('SADD', p .. 'subs:' .. to, sub)
local made = redis.pcall('XGROUP', 'CREATE', p .. 't:' .. to, sub, '$', 'MKSTREAM')
if type(made) == 'table' and made.err then
  redis.call('XGROUP', 'SETID', p .. 't:' .. to, sub, '$')
end
redis.call('HSET', p .. 's:' .. sub, 'topic', to)
return 1
";

/// ARGV: prefix, subscription, seq.
pub(super) const ACK: &str = r"
local seq = ARGV[3]
redis.call('ZREM', lease, seq); redis.call('ZREM', due, seq); redis.call('ZREM', owed, seq)
redis.call('HDEL', att, seq)
release(seq)
return 1
";

/// ARGV: prefix, subscription, seq, due at.
pub(super) const RETRY: &str = r"
local seq = ARGV[3]
if not redis.call('ZSCORE', owed, seq) then return 0 end
redis.call('ZREM', lease, seq)
redis.call('ZADD', due, ARGV[4], seq)
return 1
";

/// ARGV: prefix, subscription, seq, reason.
pub(super) const DEAD: &str = r"
local seq = ARGV[3]
if not redis.call('ZSCORE', owed, seq) then return 0 end
redis.call('ZREM', lease, seq); redis.call('ZREM', due, seq); redis.call('ZREM', owed, seq)
redis.call('ZADD', dead, seq, seq)
redis.call('HSET', why, seq, ARGV[4])
release(seq)
return 1
";

/// ARGV: prefix, subscription, limit. Answers {seq, id, attempts, reason} per letter.
pub(super) const DEAD_LETTERS: &str = r"
local out = {}
for _, s in ipairs(redis.call('ZRANGE', dead, 0, tonumber(ARGV[3]) - 1)) do
  local f = entry(s)
  out[#out + 1] = {tonumber(s), f and field(f, 'id') or '',
    tonumber(redis.call('HGET', att, s) or '0'), redis.call('HGET', why, s) or ''}
end
return out
";

/// ARGV: prefix, subscription, now, seq or '' for all.
pub(super) const REPLAY_DEAD: &str = r"
local seqs
if ARGV[4] == '' then seqs = redis.call('ZRANGE', dead, 0, -1)
elseif redis.call('ZSCORE', dead, ARGV[4]) then seqs = {ARGV[4]}
else seqs = {} end
for _, s in ipairs(seqs) do
  redis.call('ZREM', dead, s); redis.call('HDEL', why, s)
  redis.call('HSET', att, s, 0)
  redis.call('ZADD', owed, s, s)
  if admit(s, ordered and keyof(s) or nil) then redis.call('ZADD', due, ARGV[3], s) end
end
return #seqs
";

/// ARGV: prefix, subscription, now, since. Events the group has already handed out get a
/// fresh due delivery (same event id), except those leased right now.
pub(super) const REPLAY_SINCE: &str = r"
local last = tonumber(string.match(last_delivered(), '^(%d+)'))
local n = 0
for _, s in ipairs(redis.call('ZRANGEBYSCORE', p .. 'time:' .. topic, ARGV[4], '+inf')) do
  if tonumber(s) <= last and not redis.call('ZSCORE', lease, s) then
    redis.call('ZREM', dead, s); redis.call('HDEL', why, s)
    if not redis.call('HEXISTS', att, s) then redis.call('HSET', att, s, 0) end
    redis.call('ZADD', owed, s, s)
    if admit(s, ordered and keyof(s) or nil) then redis.call('ZADD', due, ARGV[3], s) end
    n = n + 1
  end
end
return n
";

/// ARGV: prefix, subscription. Answers {pending, oldest created (0: none), dead}.
pub(super) const DEPTH: &str = r"
local last = last_delivered()
local fresh = redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', 1)
local new = redis.call('ZCOUNT', p .. 'idx:' .. topic,
  '(' .. string.match(last, '^(%d+)'), '+inf')
local oldest = 0
local first = redis.call('ZRANGE', owed, 0, 0)
if #first > 0 then
  local f = entry(first[1])
  if f then oldest = tonumber(field(f, 'c')) end
end
if #fresh > 0 then
  local c = tonumber(field(fresh[1][2], 'c'))
  if oldest == 0 or c < oldest then oldest = c end
end
return {new + redis.call('ZCARD', owed), oldest, redis.call('ZCARD', dead)}
";

/// ARGV: prefix, topic, before (ms), reason. Up to 1000 of the topic's oldest events
/// published before then leave its retention: what a subscription of the topic still owed
/// of one becomes its dead letter (the event stays for it), the rest is dropped; groups
/// move past them. Events kept for dead letters wait in `kept:TOPIC` and go once no
/// subscription holds them. Answers {events seen, events dropped, then subscription and
/// count of the dead letters made}.
pub(super) const TRIM: &str = r"
local p, topic, reason = ARGV[1], ARGV[2], ARGV[4]
local stream = p .. 't:' .. topic
local old = redis.call('ZRANGEBYSCORE', p .. 'time:' .. topic, '-inf', '(' .. ARGV[3], 'LIMIT', 0, 1000)
local subs = redis.call('SMEMBERS', p .. 'subs:' .. topic)
local read = {}
local groups = redis.pcall('XINFO', 'GROUPS', stream)
if type(groups) == 'table' and not groups.err then
  for _, g in ipairs(groups) do
    local name, last
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] end
      if g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    if name then read[name] = tonumber(string.match(last, '^(%d+)')) end
  end
end
local made, highest, dropped = {}, 0, 0
local function drop(s, f)
  for i = 1, #f, 2 do
    if f[i] == 'id' then redis.call('HDEL', p .. 'ids', f[i + 1]) end
  end
  redis.call('XDEL', stream, s .. '-0')
  dropped = dropped + 1
end
-- Kept for dead letters before: dropped once no subscription holds them (replayed and
-- delivered, say).
for _, s in ipairs(redis.call('ZRANGE', p .. 'kept:' .. topic, 0, 999)) do
  local held = false
  for _, sub in ipairs(subs) do
    if redis.call('ZSCORE', p .. 'dead:' .. sub, s) or redis.call('ZSCORE', p .. 'owed:' .. sub, s) then
      held = true
    end
  end
  if not held then
    local e = redis.call('XRANGE', stream, s .. '-0', s .. '-0')
    if #e > 0 then drop(s, e[1][2]) end
    redis.call('ZREM', p .. 'kept:' .. topic, s)
  end
end
for _, s in ipairs(old) do
  local e = redis.call('XRANGE', stream, s .. '-0', s .. '-0')
  local f = #e > 0 and e[1][2] or {}
  local k = ''
  for i = 1, #f, 2 do if f[i] == 'k' then k = f[i + 1] end end
  local keep = false
  for _, sub in ipairs(subs) do
    local owed = p .. 'owed:' .. sub
    local unread = read[sub] ~= nil and tonumber(s) > read[sub]
    if #e > 0 and (redis.call('ZSCORE', owed, s) or unread) then
      redis.call('ZREM', p .. 'lease:' .. sub, s)
      redis.call('ZREM', p .. 'due:' .. sub, s)
      redis.call('ZREM', owed, s)
      redis.call('ZADD', p .. 'dead:' .. sub, s, s)
      redis.call('HSET', p .. 'why:' .. sub, s, reason)
      if not redis.call('HEXISTS', p .. 'att:' .. sub, s) then
        redis.call('HSET', p .. 'att:' .. sub, s, 0)
      end
      -- An ordered key's head gone: the next of the key falls due.
      if string.sub(k, 1, 1) == '1' then
        local kz = p .. 'kz:' .. sub .. ':' .. string.sub(k, 2)
        redis.call('ZREM', kz, s)
        local nxt = redis.call('ZRANGE', kz, 0, 0)[1]
        if nxt and not redis.call('ZSCORE', p .. 'lease:' .. sub, nxt) then
          redis.call('ZADD', p .. 'due:' .. sub, 0, nxt)
        end
      end
      made[sub] = (made[sub] or 0) + 1
      keep = true
    end
  end
  if #e > 0 and not keep then
    drop(s, f)
  elseif keep then
    redis.call('ZADD', p .. 'kept:' .. topic, s, s)
  end
  redis.call('ZREM', p .. 'time:' .. topic, s)
  redis.call('ZREM', p .. 'idx:' .. topic, s)
  highest = math.max(highest, tonumber(s))
end
for sub, last in pairs(read) do
  if highest > last then redis.call('XGROUP', 'SETID', stream, sub, highest .. '-0') end
end
local out = {#old, dropped}
for sub, n in pairs(made) do out[#out + 1] = sub; out[#out + 1] = n end
return out
";

/// ARGV: prefix, id. Answers {seq, topic, key, headers, body, created} or nil.
pub(super) const GET: &str = r"
local p = ARGV[1]
local at = redis.call('HGET', p .. 'ids', ARGV[2])
if not at then return nil end
local seq, topic = string.match(at, '^(%d+) (.*)$')
local e = redis.call('XRANGE', p .. 't:' .. topic, seq .. '-0', seq .. '-0')
if #e == 0 then return nil end
local f = e[1][2]
local function field(name)
  for i = 1, #f, 2 do if f[i] == name then return f[i + 1] end end
  return ''
end
return {tonumber(seq), topic, field('k'), field('h'), field('b'), field('c')}
";

pub(super) struct Scripts {
    pub(super) publish: Script,
    pub(super) lease: Script,
    pub(super) moved: Script,
    pub(super) ack: Script,
    pub(super) retry: Script,
    pub(super) dead: Script,
    pub(super) dead_letters: Script,
    pub(super) replay_dead: Script,
    pub(super) replay_since: Script,
    pub(super) depth: Script,
    pub(super) get: Script,
    pub(super) trim: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let with = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Self {
            publish: Script::new(PUBLISH),
            lease: with(LEASE),
            moved: with(MOVE),
            ack: with(ACK),
            retry: with(RETRY),
            dead: with(DEAD),
            dead_letters: with(DEAD_LETTERS),
            replay_dead: with(REPLAY_DEAD),
            replay_since: with(REPLAY_SINCE),
            depth: with(DEPTH),
            get: Script::new(GET),
            trim: Script::new(TRIM),
        }
    }
}
