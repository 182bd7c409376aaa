package tracker

import "github.com/redis/go-redis/v9"

// Every script touches keys of one hash tag only, so it runs on Redis Cluster.
// Hash values of presence entries start with "<node id>|"; scripts compare
// that prefix so a node never deletes or rewrites another node's entry.

// cdelField deletes a hash field if its value belongs to the node.
// KEYS[1] hash; ARGV[1] field, ARGV[2] "node|".
var cdelField = redis.NewScript(`
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.sub(v, 1, #ARGV[2]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0`)

// casField sets a hash field unless another node's value is there.
// KEYS[1] hash; ARGV[1] field, ARGV[2] "node|", ARGV[3] value.
var casField = redis.NewScript(`
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.sub(v, 1, #ARGV[2]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1`)

// subscribeScript records a resource listener in the tenant list and the
// per-resource hash. With ARGV[5] == "1" it only fills a missing entry (rebuild).
// KEYS[1] rsubs, KEYS[2] rsub:H; ARGV[1] field S:H, ARGV[2] value, ARGV[3] S,
// ARGV[4] value for rsub:H, ARGV[5] nx.
var subscribeScript = redis.NewScript(`
if ARGV[5] == '1' and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
return 1`)

// unsubscribeScript removes a resource listener if it belongs to the node.
// KEYS[1] rsubs, KEYS[2] rsub:H; ARGV[1] field S:H, ARGV[2] "node|", ARGV[3] S.
var unsubscribeScript = redis.NewScript(`
local n = 0
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.sub(v, 1, #ARGV[2]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  n = 1
end
v = redis.call('HGET', KEYS[2], ARGV[3])
if v and string.sub(v, 1, #ARGV[2]) == ARGV[2] then redis.call('HDEL', KEYS[2], ARGV[3]) end
return n`)

// cmpExpire refreshes a string key's TTL if it still holds the value.
// KEYS[1] key; ARGV[1] value, ARGV[2] ttl ms.
var cmpExpire = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`)

// renewClaim extends an in-flight claim if the key still holds its value, or writes it
// back when the key is gone (Redis lost its data) and the holder says it is recent.
// KEYS[1] key; ARGV[1] value, ARGV[2] ttl ms, ARGV[3] "1" when the claim may be written
// back. Returns 1 held, 0 lost.
var renewClaim = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if v or ARGV[3] ~= '1' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`)

// cmpDelete deletes a string key if it still holds the value.
// KEYS[1] key; ARGV[1] value.
var cmpDelete = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)

// completeScript replaces an in-flight claim by its result if still held (and, for
// ReclaimInFlight, a stored result by a new claim if still stored).
// KEYS[1] key; ARGV[1] value held, ARGV[2] value to put in its place, ARGV[3] its ttl ms.
var completeScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0`)

// claimLease grants a free lease with epoch = max(counter, floor) + 1.
// KEYS[1] lease, KEYS[2] epoch; ARGV[1] token, ARGV[2] node, ARGV[3] ttl ms,
// ARGV[4] floor, ARGV[5] epoch counter ttl ms. Returns {1, epoch} or
// {0, holder, holder epoch, lease pttl ms}.
var claimLease = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'node', 'epoch')
if h[1] then return {0, h[1], h[2] or '0', redis.call('PTTL', KEYS[1])} end
local cur = redis.call('GET', KEYS[2])
if not cur or tonumber(cur) < tonumber(ARGV[4]) then redis.call('SET', KEYS[2], ARGV[4]) end
redis.call('INCR', KEYS[2])
local e = redis.call('GET', KEYS[2])
redis.call('HSET', KEYS[1], 'tok', ARGV[1], 'node', ARGV[2], 'epoch', e)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return {1, e}`)

// renewLease extends a lease if the token still holds it. If the lease key is
// gone (Redis lost data) and no newer epoch was granted, it is re-asserted at
// the same epoch: safe, because fencing compares epochs and nobody holds a
// newer one. Any newer grant makes the holder stale. Only a holder that renewed
// recently may re-assert (ARGV[6] "1"): one whose lease lapsed unrenewed (it
// was paused) may have been superseded, and Redis may since have lost the
// newer epoch too, so it must not bring its own back.
// KEYS[1] lease, KEYS[2] epoch; ARGV[1] token, ARGV[2] node, ARGV[3] epoch,
// ARGV[4] ttl ms, ARGV[5] epoch counter ttl ms, ARGV[6] "1" when it may be
// re-asserted. Returns 1 held, 0 lost.
var renewLease = redis.NewScript(`
local tok = redis.call('HGET', KEYS[1], 'tok')
if tok then
  if tok == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
    redis.call('PEXPIRE', KEYS[2], ARGV[5])
    return 1
  end
  return 0
end
if ARGV[6] ~= '1' then return 0 end
local cur = redis.call('GET', KEYS[2])
if cur and tonumber(cur) > tonumber(ARGV[3]) then return 0 end
if not cur or tonumber(cur) < tonumber(ARGV[3]) then redis.call('SET', KEYS[2], ARGV[3]) end
redis.call('HSET', KEYS[1], 'tok', ARGV[1], 'node', ARGV[2], 'epoch', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1`)

// releaseLease deletes a lease if the token still holds it.
// KEYS[1] lease; ARGV[1] token.
var releaseLease = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'tok') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)

// publishScript numbers a message on its channel and publishes it.
// KEYS[1] sequence key; ARGV[1] channel, ARGV[2] payload. Returns the sequence.
var publishScript = redis.NewScript(`
local s = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], s .. '|' .. ARGV[2])
return s`)
