-- wrk script for the benches (bench/lib/wrk.py): every request asks for the pixel of one
-- site for a random subject "<prefix><n>", n drawn uniformly from [first, first + count).
--
--   wrk ... -s bench/lib/wrk_subjects.lua -- <site> <prefix> <first> <count>
--
-- count = 0 sends no `u` at all (an anonymous visitor). done() prints one line,
-- "WRK_JSON {...}", with latency percentiles in microseconds, the summary counters, and how
-- many requests the threads wrote (some may still be unanswered when wrk stops).

local threads = {}

function setup(thread)
   thread:set("id", #threads + 1)
   table.insert(threads, thread)
end

function init(args)
   site = args[1] or "bench"
   prefix = args[2] or "s-"
   first = tonumber(args[3] or "0")
   count = tonumber(args[4] or "0")
   sent = 0
   math.randomseed(os.time() * 1000 + id * 7919)
   wrk.headers["User-Agent"] = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
      .. "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
   base = "/p/" .. site .. "/pixel.gif?p=/bench/page"
end

function request()
   sent = sent + 1
   if count > 0 then
      local n = first + math.random(0, count - 1)
      return wrk.format("GET", base .. "&u=" .. prefix .. n)
   end
   return wrk.format("GET", base)
end

function done(summary, latency, requests)
   local written = 0
   for _, thread in ipairs(threads) do
      written = written + thread:get("sent")
   end
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"duration_us": %d, "requests": %d, "bytes": %d, "sent": %d, '
         .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
         .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d, '
         .. '"mean": %.1f}}\n',
      summary.duration, summary.requests, summary.bytes, written,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max, latency.mean))
end
