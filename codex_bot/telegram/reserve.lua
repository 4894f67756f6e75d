-- Reserve one request's turn under a bot's budget and its chat's budget, atomically.
--
-- KEYS[1]  budget hash (bot-wide or paid): tat = end of the contiguous booked schedule (us),
--          fchat/funtil/fhold = the chat last held for a 429, until when, and for how long
-- KEYS[2]  budget zset: bookings placed beyond tat by requests their chat made wait;
--          member = start (us), score = end (us); bookings never overlap
-- KEYS[3]  chat string "tat t1 t2 ... tn": the chat's next free time, then (groups only) the
--          start times of its last n <= cap messages; absent for requests without a chat
-- ARGV     now_us (0: Redis TIME), cost, step_us, kind (0 none, 1 private, 2 group),
--          chat_step_us, group_cap, group_window_us, max_wait_us, hold_us, flood_chat
-- Returns  {1, wait_us} when booked; {0, wait_us} when the turn is beyond max_wait_us (then
--          only a hold is written, nothing is booked)

if redis.replicate_commands then redis.replicate_commands() end

local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local cost = tonumber(ARGV[2])
local step = tonumber(ARGV[3])
local kind = tonumber(ARGV[4])
local chat_step = tonumber(ARGV[5])
local cap = tonumber(ARGV[6])
local window = tonumber(ARGV[7])
local max_wait = tonumber(ARGV[8])
local hold = tonumber(ARGV[9])
local flood_chat = ARGV[10]

local function us(x) return string.format('%.0f', x) end

local function extend_ttl(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end

-- The budget: a 429 holds the chat; a 429 without a chat holds the whole budget, and so
-- does a 429 for a second chat while another is held: for the shorter of the two holds
-- (one chat's long hold, a group's minutes, must not stop every other chat that long).
local budget = redis.call('HMGET', KEYS[1], 'tat', 'funtil', 'fchat', 'fhold')
local tat = tonumber(budget[1]) or 0
local funtil = tonumber(budget[2]) or 0
if hold > 0 then
  if kind == 0 then
    tat = math.max(tat, now + hold)
  elseif funtil > now and budget[3] ~= flood_chat then
    tat = math.max(tat, now + math.min(hold, tonumber(budget[4]) or hold))
  end
  funtil = now + hold
  redis.call('HSET', KEYS[1], 'funtil', us(funtil), 'fchat', flood_chat, 'fhold', us(hold))
end

-- The chat: the earliest start its own limits allow.
local earliest = now
local chat_tat = 0
local log = {}
if kind > 0 then
  local raw = redis.call('GET', KEYS[3])
  if raw then
    for v in string.gmatch(raw, '%d+') do log[#log + 1] = tonumber(v) end
    chat_tat = table.remove(log, 1) or 0
  end
  if hold > 0 then chat_tat = math.max(chat_tat, now + hold) end
  earliest = math.max(earliest, chat_tat)
  if kind == 2 then
    -- the oldest `over` messages must have left the window before this one starts
    local over = #log + math.min(cost, cap) - cap
    if over > 0 then earliest = math.max(earliest, log[over] + window) end
  end
end

-- The budget's first interval of cost * step free of bookings, from max(now, tat, earliest).
-- A request its chat makes wait books further on and leaves the free time before it to
-- other chats; a request that can go at the head of the schedule advances tat.
local len = cost * step
local head = math.max(now, tat)
local start = math.max(head, earliest)
local fits = false
while not fits do
  local rows = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. us(start), '+inf', 'WITHSCORES',
    'LIMIT', 0, 64)
  for i = 1, #rows, 2 do
    if tonumber(rows[i]) >= start + len then fits = true break end
    start = tonumber(rows[i + 1])
  end
  if #rows < 128 then fits = true end
end

local wait = start - now
local granted = wait <= max_wait
local ttl = 0
if granted then
  if earliest <= head + step then
    tat = start + len
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', us(tat))
  else
    redis.call('ZADD', KEYS[2], us(start + len), us(start))
  end
  ttl = start + len - now
  if kind > 0 then
    chat_tat = start + cost * chat_step
    if kind == 2 then
      for _ = 1, math.min(cost, cap) do log[#log + 1] = start end
      while #log > cap do table.remove(log, 1) end
    end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', us(now))
redis.call('HSET', KEYS[1], 'tat', us(tat))
-- Keys live while they can still delay someone: the budget's plus a minute, a chat's plus a
-- second, so an idle chat leaves nothing behind.
ttl = math.floor(math.max(ttl, tat - now, funtil - now) / 1000) + 60000
extend_ttl(KEYS[1], ttl)
if redis.call('EXISTS', KEYS[2]) == 1 then extend_ttl(KEYS[2], ttl) end
if kind > 0 and (granted or hold > 0) then
  local last = log[#log] or 0
  local keep = math.max(chat_tat, last + window) - now
  local value = us(chat_tat)
  for i = 1, #log do value = value .. ' ' .. us(log[i]) end
  redis.call('SET', KEYS[3], value, 'PX', math.floor(math.max(keep, 0) / 1000) + 1000)
end
return {granted and 1 or 0, wait}
