-- wrk script for bench/run: POSTs pre-signed, unique webhook bodies and counts
-- what came back. Parameters come from the environment (wrk's done() runs in a
-- Lua state that never sees the script arguments):
--
--   BENCH_REQS  prefix of the request files; thread k reads "<prefix>.<k>":
--               line 1 the x-timestamp, then per request a line "<x-signature> <length>",
--               the body's exact bytes (it may contain newlines) and a newline.
--               Each thread has its own file, so no two threads send one body.
--   BENCH_OUT   where done() writes a JSON summary
--   BENCH_IDS   where done() writes the ids of accepted events, one per line
--               (unset: ids are not collected)
--
-- Requests are formatted once in init(), so request() only returns a string.
-- A thread that runs out of bodies starts again from its first one: those
-- repeats are answered "duplicate" and counted as such (and as `wrapped`).

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  local prefix = assert(os.getenv("BENCH_REQS"), "BENCH_REQS is not set")
  collect_ids = os.getenv("BENCH_IDS") ~= nil
  local f = assert(io.open(prefix .. "." .. id, "r"))
  local ts = f:read("*l")
  reqs = {}
  while true do
    local head = f:read("*l")
    if not head or head == "" then break end
    local sig, len = head:match("^(%S+) (%d+)$")
    assert(sig, "bad request file line: " .. head)
    local body = f:read(tonumber(len))
    f:read(1)  -- the newline after the body
    local headers = {
      ["Content-Type"] = "application/json",
      ["x-timestamp"] = ts,
      ["x-signature"] = sig,
    }
    reqs[#reqs + 1] = wrk.format("POST", wrk.path, headers, body)
  end
  f:close()
  n = #reqs
  assert(n > 0, "no requests in " .. prefix .. "." .. id)
  i = 0
  wrapped = 0
  accepted = 0
  duplicate = 0
  other2xx = 0
  non2xx = 0
  statuses = {}
  ids = {}
end

function request()
  i = i + 1
  if i > n then
    i = 1
    wrapped = wrapped + 1
  end
  return reqs[i]
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    local id = body:match('"status":"accepted","id":(%d+)')
    if id then
      accepted = accepted + 1
      if collect_ids then ids[accepted] = id end
    elseif body:find('"duplicate"', 1, true) then
      duplicate = duplicate + 1
    else
      other2xx = other2xx + 1
    end
  else
    non2xx = non2xx + 1
    local k = tostring(status)
    statuses[k] = (statuses[k] or 0) + 1
  end
end

function done(summary, latency, requests)
  local t = {accepted = 0, duplicate = 0, other2xx = 0, non2xx = 0, wrapped = 0}
  local status_counts = {}
  local ids_out = os.getenv("BENCH_IDS")
  local idf = ids_out and assert(io.open(ids_out, "w"))
  for _, thread in ipairs(threads) do
    for _, k in ipairs({"accepted", "duplicate", "other2xx", "non2xx", "wrapped"}) do
      t[k] = t[k] + (thread:get(k) or 0)
    end
    for code, c in pairs(thread:get("statuses") or {}) do
      status_counts[code] = (status_counts[code] or 0) + c
    end
    if idf then
      local tids = thread:get("ids") or {}
      if #tids > 0 then idf:write(table.concat(tids, "\n"), "\n") end
    end
  end
  if idf then idf:close() end

  local parts = {}
  local function add(k, v) parts[#parts + 1] = string.format('"%s":%s', k, v) end
  add("requests", summary.requests)
  add("duration_us", summary.duration)
  add("bytes", summary.bytes)
  for _, k in ipairs({"connect", "read", "write", "status", "timeout"}) do
    add("err_" .. k, summary.errors[k])
  end
  for k, v in pairs(t) do add(k, v) end
  local sc = {}
  for code, c in pairs(status_counts) do sc[#sc + 1] = string.format('"%s":%d', code, c) end
  add("statuses", "{" .. table.concat(sc, ",") .. "}")
  add("lat_mean_us", string.format("%.1f", latency.mean))
  add("lat_max_us", latency.max)
  for _, p in ipairs({50, 90, 99, 99.9}) do
    add("lat_p" .. tostring(p) .. "_us", latency:percentile(p))
  end
  local f = assert(io.open(assert(os.getenv("BENCH_OUT"), "BENCH_OUT is not set"), "w"))
  f:write("{", table.concat(parts, ","), "}\n")
  f:close()
end
