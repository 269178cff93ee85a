-- wrk script of the benchmark (bench/driver.py): one request per call, on ids drawn at random.
--
--   wrk -t1 -c32 -d8s -s bench/wrk_requests.lua http://127.0.0.1:PORT -- \
--       MODE IDS_FILE TOKEN TAG EXPECTED_STATUS
--
-- MODE "children": POST /api/v2/conversations/{id}/children with a bearer token and a unique
-- Idempotency-Key (TAG-thread-counter); MODE "get": GET /api/v2/conversations/{id}.
-- MODE "split": the same POST, a child with overrides, an internal note and copies of the
-- parent's messages, whose ids follow the parent's on its line ("ID M1,M2,...").
-- MODE "batch": POST /api/v2/conversations/{id}/children/batch, ten children at once.
-- The id is drawn at random from IDS_FILE (one per line) for every request. Every response
-- whose status is not EXPECTED_STATUS counts as an error. done() prints one line
-- "WRK_JSON {...}" that bench/driver.py parses.

local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  mode = args[1]
  ids = {}
  copies = {}
  for line in io.lines(args[2]) do
    local id, messages = string.match(line, "^(%S+)%s*(%S*)$")
    if id then
      ids[#ids + 1] = id
      copies[id] = messages
    end
  end
  token = args[3]
  tag = args[4]
  expected = tonumber(args[5])
  counter = 0
  bad = 0
  math.randomseed(os.time() * 1000 + tid * 7919)
  body = '{"subject": "Benchmark child: refund the damaged item"}'
  local children = {}
  for i = 1, 10 do
    children[i] = '{"subject": "Benchmark child ' .. i .. ' of a batch", "priority": "low"}'
  end
  batch_body = '{"children": [' .. table.concat(children, ", ") .. ']}'
end

function split_body(id)
  local quoted = string.gsub(copies[id], "([^,]+)", '"%1"')
  return '{"subject": "Benchmark split: refund the damaged item", "priority": "urgent", ' ..
    '"assignee_team_id": "team_refunds", "assignee_team_name": "Refunds", ' ..
    '"assignee_user_id": null, "assignee_user_name": null, "tags": ["split", "refund"], ' ..
    '"message": {"body": "Split off: Refunds handles the money, Logistics the parcel.", ' ..
    '"is_internal": true, "sender_type": "agent", "sender_id": "user_7"}, ' ..
    '"copy_message_ids": [' .. quoted .. ']}'
end

function request()
  counter = counter + 1
  local id = ids[math.random(#ids)]
  if mode == "get" then
    return wrk.format("GET", "/api/v2/conversations/" .. id,
      { ["Authorization"] = "Bearer " .. token })
  end
  local path, payload = "/children", body
  if mode == "split" then
    payload = split_body(id)
  elseif mode == "batch" then
    path, payload = "/children/batch", batch_body
  end
  return wrk.format("POST", "/api/v2/conversations/" .. id .. path, {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = tag .. "-" .. tid .. "-" .. counter,
  }, payload)
end

function response(status, headers, response_body)
  if status ~= expected then
    bad = bad + 1
    if bad <= 3 then
      io.stderr:write("unexpected status " .. status .. ": " .. string.sub(response_body, 1, 300) .. "\n")
    end
  end
end

function done(summary, latency, requests)
  local unexpected = 0
  for _, t in ipairs(threads) do unexpected = unexpected + t:get("bad") end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "unexpected_status": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "timeout": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, unexpected,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
