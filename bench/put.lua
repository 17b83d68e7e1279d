-- wrk script of scripts/bench.py: PUT one FHIR resource, read from a file, on every request, and
-- print the run's numbers as one JSON line for the orchestrator.
--
--   wrk -t1 -c16 -d10s --latency -s bench/put.lua http://127.0.0.1:PORT/Patient/ID -- BODY.json
--
-- The request is built once (wrk formats it after init), so wrk spends no time per request here.

function init(args)
  local path = args[1]
  if path == nil then
    error("usage: wrk ... -s put.lua URL -- BODY_FILE")
  end
  local file = assert(io.open(path, "rb"))
  wrk.method = "PUT"
  wrk.body = file:read("*a")
  file:close()
  wrk.headers["Content-Type"] = "application/fhir+json"
end

-- Latencies are in microseconds; errors.status counts answers with a status above 399.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
