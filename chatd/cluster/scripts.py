"""The Lua scripts that make each cluster change atomic inside Redis, and the keys.

A room's keys share the hash tag ``{r:KEY}``: its seq counter, its stream
(messages at ids ``<seq>-0``; edits and deletions at ``<seq>-N`` after the
newest message) and its idempotency hash. ``say`` touches only those, so rooms
could be spread over a Redis Cluster. The rest (accounts, rooms, memberships,
bans, invitations, markers: :data:`STATE`; the change feed: :data:`META`; who
is online where: :data:`ONLINE`; node leases) is global and rarely written.
"""

from __future__ import annotations

import hashlib

CLUSTER = "chat:cluster"  # the cluster's id: written once, when a node first starts it
STATE = "chat:state"  # hash: one field per stored record (see chatd.cluster.codec)
META = "chat:meta"  # stream: every change but messages, with the frames it caused
ONLINE = "chat:online"  # hash: name key -> "node<TAB>token<TAB>name"
NODES = "chat:nodes"  # set of node ids that hold (or held) a lease
SUSPECTS = "chat:suspects"  # hash: node whose lease was seen missing -> since when (ms)
CONFIRM_MS = 1500  # a lease missing this long is a dead node (not a Redis that paused)
META_MAXLEN = 100_000  # the feed is for live nodes; a starting node reads STATE
TRIM_EVERY = 64  # a room's stream holds up to this many more than retained


def lease_key(node: str) -> str:
    return f"chat:node:{node}"


def room_keys(room: str) -> tuple[str, str, str]:
    """(seq counter, stream, idempotency hash) of a room."""
    tag = f"chat:{{r:{room}}}"
    return f"{tag}:seq", f"{tag}:log", f"{tag}:ids"


def gone_key(room: str) -> str:
    """Set while a removed room is not made again: a message still on its way
    to it is refused (its counter stays, so a room made again goes on)."""
    return f"chat:{{r:{room}}}:gone"


#: KEYS seq, log, ids, gone. ARGV retain, the seq this node last saw, trim period,
#: then sender key, id ('' none), sender, text for each message of the room
#: this node got in one loop turn. A counter that is missing or behind what
#: the node saw means Redis lost data: fail rather than number from 1 again.
#: Each message gets {1, seq, ts}, or {0, seq, [entry]} when its sender used
#: its id before. The stream is trimmed to ``retain`` once every ``trim
#: period`` messages (one XRANGE + XTRIM per message costs Redis a third of
#: its time); the nodes' caches keep exactly ``retain``.
SAY = r"""
local cur = redis.call('GET', KEYS[1])
if not cur or tonumber(cur) < tonumber(ARGV[2]) then
  return redis.error_reply('UNAVAILABLE the room counter is gone: Redis lost the cluster data')
end
if redis.call('EXISTS', KEYS[4]) == 1 then
  return redis.error_reply('GONE the room was removed')
end
local keep, every = tonumber(ARGV[1]), tonumber(ARGV[3])
local t = redis.call('TIME')
local ts = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 4, #ARGV, 4 do
  local sk, id, sender, text = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local old = id ~= '' and redis.call('HGET', KEYS[3], sk .. '\n' .. id)
  if old then
    out[#out + 1] = {0, tonumber(old), redis.call('XRANGE', KEYS[2], old .. '-0', old .. '-0')}
  else
    local seq = redis.call('INCR', KEYS[1])
    redis.call('XADD', KEYS[2], seq .. '-0', 'k', 'm', 'ts', ts, 's', sender, 'sk', sk,
               'i', id, 't', text)
    if id ~= '' then
      redis.call('HSET', KEYS[3], sk .. '\n' .. id, seq)
    end
    if seq > keep and (seq - keep) % every == 0 then
      local min = seq - keep + 1
      for _, e in ipairs(redis.call('XRANGE', KEYS[2], '-', '(' .. min .. '-0')) do
        local f, osk, oid = e[2], nil, nil
        for j = 1, #f, 2 do
          if f[j] == 'sk' then osk = f[j + 1] elseif f[j] == 'i' then oid = f[j + 1] end
        end
        if osk and oid and oid ~= '' then redis.call('HDEL', KEYS[3], osk .. '\n' .. oid) end
      end
      redis.call('XTRIM', KEYS[2], 'MINID', min .. '-0')
    end
    out[#out + 1] = {1, seq, ts}
  end
end
return out
"""

#: KEYS cluster, state, meta, then room keys the commands name by index.
#: ARGV cluster id, node, payload, then commands:
#:   S field value | D field | P prefix (delete fields by prefix) | N i j (a
#:   room made: counter KEYS[i] starts at 0 unless it exists, KEYS[j] "gone"
#:   cleared) | R i j k (a room removed: KEYS[i], KEYS[j] deleted, KEYS[k] "gone" set)
#:   | E i j seq text edited (edit entry in stream KEYS[j] after counter KEYS[i])
#:   | X i j seq (deletion entry).
META_COMMIT = r"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('UNAVAILABLE the cluster id is gone: Redis lost the cluster data')
end
local i = 4
while i <= #ARGV do
  local c = ARGV[i]
  if c == 'S' then
    redis.call('HSET', KEYS[2], ARGV[i + 1], ARGV[i + 2]); i = i + 3
  elseif c == 'D' then
    redis.call('HDEL', KEYS[2], ARGV[i + 1]); i = i + 2
  elseif c == 'P' then
    local p = ARGV[i + 1]
    for _, f in ipairs(redis.call('HKEYS', KEYS[2])) do
      if string.sub(f, 1, #p) == p then redis.call('HDEL', KEYS[2], f) end
    end
    i = i + 2
  elseif c == 'N' then
    redis.call('SET', KEYS[tonumber(ARGV[i + 1])], 0, 'NX')
    redis.call('DEL', KEYS[tonumber(ARGV[i + 2])]); i = i + 3
  elseif c == 'R' then
    redis.call('DEL', KEYS[tonumber(ARGV[i + 1])], KEYS[tonumber(ARGV[i + 2])])
    redis.call('SET', KEYS[tonumber(ARGV[i + 3])], 1); i = i + 4
  elseif c == 'E' then
    local cur = redis.call('GET', KEYS[tonumber(ARGV[i + 1])]) or '0'
    redis.call('XADD', KEYS[tonumber(ARGV[i + 2])], cur .. '-*', 'k', 'e', 'seq', ARGV[i + 3],
               't', ARGV[i + 4], 'ed', ARGV[i + 5])
    i = i + 6
  elseif c == 'X' then
    local cur = redis.call('GET', KEYS[tonumber(ARGV[i + 1])]) or '0'
    redis.call('XADD', KEYS[tonumber(ARGV[i + 2])], cur .. '-*', 'k', 'd', 'seq', ARGV[i + 3])
    i = i + 4
  else
    return redis.error_reply('ERR unknown command ' .. c)
  end
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', META_MAXLEN, '*', 'n', ARGV[2], 'p', ARGV[3])
return 1
""".replace("META_MAXLEN", str(META_MAXLEN))

#: KEYS cluster, state, then the room's counter and "gone" key for a room. ARGV cluster id,
#: field, record. Whether a new room or account may be made: two nodes may
#: try at the same moment, each before it heard of the other. The first
#: reserves it (its record written now, the rest in its turn's commit); the
#: second gets that record back (it joins that room; the name is an account).
RESERVE = r"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('UNAVAILABLE the cluster id is gone: Redis lost the cluster data')
end
if redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3]) == 1 then
  if KEYS[3] then
    redis.call('SET', KEYS[3], 0, 'NX')
    redis.call('DEL', KEYS[4])
  end
  return false
end
return redis.call('HGET', KEYS[2], ARGV[2])
"""

#: KEYS online, meta, cluster. ARGV name key, node, new token, token given
#: ('' none), name, cluster id. A name online elsewhere is refused unless the
#: token is that session's: then the other node is told to end it (a ``kick``
#: on the feed).
CLAIM = r"""
if redis.call('GET', KEYS[3]) ~= ARGV[6] then
  return redis.error_reply('UNAVAILABLE the cluster id is gone: Redis lost the cluster data')
end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local took = ''
if cur then
  local node, token = string.match(cur, '^([^\t]*)\t([^\t]*)\t')
  if ARGV[4] == '' or token ~= ARGV[4] then return {0, node} end
  took = node
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '\t' .. ARGV[3] .. '\t' .. ARGV[5])
if took ~= '' and took ~= ARGV[2] then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', META_MAXLEN, '*', 'n', ARGV[2], 'kick', ARGV[1],
             'node', took)
end
return {1, took}
""".replace("META_MAXLEN", str(META_MAXLEN))

#: KEYS online. ARGV name key, node, token: the name is free again, if this
#: session still holds it.
RELEASE = r"""
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and string.sub(cur, 1, #ARGV[2] + #ARGV[3] + 2) == ARGV[2] .. '\t' .. ARGV[3] .. '\t' then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
"""

#: KEYS lease, nodes, suspects. ARGV node, lease ms. Returns 1 if the node
#: was not listed: new, or reaped meanwhile (then its sessions were announced
#: lost, and it claims them again).
RENEW = r"""
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[1])
return redis.call('SADD', KEYS[2], ARGV[1])
"""

#: KEYS nodes, online, suspects. ARGV this node, confirm ms. A node whose
#: lease is missing becomes a suspect; still missing ``confirm ms`` later
#: (every live node renews each second, so not a Redis that paused), it is
#: dropped with its sessions, which are returned (key, name, key, name...) to
#: the one caller that saw it go: that node announces them ``lost``.
REAP = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead, any = {}, false
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if n ~= ARGV[1] and redis.call('EXISTS', 'chat:node:' .. n) == 0 then
    local since = redis.call('HGET', KEYS[3], n)
    if not since then
      redis.call('HSET', KEYS[3], n, now)
    elseif now - tonumber(since) >= tonumber(ARGV[2]) then
      dead[n] = true; any = true
      redis.call('SREM', KEYS[1], n)
      redis.call('HDEL', KEYS[3], n)
    end
  end
end
if not any then return {} end
local out = {}
local all = redis.call('HGETALL', KEYS[2])
for j = 1, #all, 2 do
  local node, name = string.match(all[j + 1], '^([^\t]*)\t[^\t]*\t(.*)$')
  if node and dead[node] then
    redis.call('HDEL', KEYS[2], all[j])
    table.insert(out, all[j]); table.insert(out, name)
  end
end
return out
"""

SCRIPTS = {"say": SAY, "meta": META_COMMIT, "reserve": RESERVE, "claim": CLAIM,
           "release": RELEASE,
           "renew": RENEW, "reap": REAP}
SHA = {name: hashlib.sha1(body.encode()).hexdigest() for name, body in SCRIPTS.items()}
