#!/usr/bin/env python3
"""Abuse soak: legitimate proxy, event and AI traffic mixed with hostile clients.

Started by scripts/abuse-soak.sh, which runs Weir, an nginx upstream / fake provider /
webhook sink, and passes their addresses. Phases: a baseline of legitimate traffic alone,
then the same traffic with every kind of abuse at fixed rates, then a drain in which every
acknowledged event must reach the sink. Prints a report and exits 1 if a check failed:

  * Weir is alive at the end and its resident memory never passed the ceiling;
  * every event answered 202 was delivered (ids counted at the sink);
  * every abusive request got its documented answer (status, or the connection closed);
  * legitimate requests all succeeded, and (full mode) their p99 under abuse stayed within
    2x of the baseline's.

Loopback only; every rate, count and duration is fixed by the arguments.
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

KEY = "soak-key-000000000000000000"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--proxy", required=True, help="Weir's proxy address host:port")
    p.add_argument("--admin", required=True, help="Weir's admin address host:port (metrics)")
    p.add_argument("--pid", type=int, required=True, help="Weir's process id")
    p.add_argument("--sink-log", required=True, help="the webhook sink's access log")
    p.add_argument("--seconds", type=int, default=600, help="abuse phase length")
    p.add_argument("--baseline", type=int, default=60, help="baseline phase length")
    p.add_argument("--rss-ceiling-mib", type=int, default=512)
    p.add_argument("--proxy-rate", type=float, default=500.0, help="legit proxy req/s")
    p.add_argument("--event-rate", type=float, default=200.0, help="legit events/s")
    p.add_argument("--ai-rate", type=float, default=20.0, help="legit AI calls/s")
    p.add_argument("--bad-key-rate", type=float, default=2000.0)
    p.add_argument("--idle-connections", type=int, default=2000)
    p.add_argument("--slowloris", type=int, default=200, help="slow heads and bodies, each")
    p.add_argument("--hostile-rate", type=float, default=20.0,
                   help="oversized, nested, header floods and h2 resets, per second each")
    p.add_argument("--load-bin", help="weir-load: drives legitimate proxy traffic open-loop at --load-rate")
    p.add_argument("--load-rate", type=float, default=0.0,
                   help="legit proxy req/s sent by weir-load; 0 with --load-bin: half the peak "
                        "that wrk measures while the other legitimate traffic runs")
    p.add_argument("--enforce-latency", action="store_true",
                   help="fail when legitimate p99 under abuse passes 2x the baseline")
    return p.parse_args()


class Stats:
    def __init__(self):
        self.latency = {"baseline": [], "abuse": []}
        self.legit_failures = []
        self.answers = {}  # abuse kind -> {answer: count}
        self.expected = {}  # abuse kind -> set of accepted answers
        self.acked = set()
        self.rss_peak = 0

    def answer(self, kind, got):
        self.answers.setdefault(kind, {}).setdefault(got, 0)
        self.answers[kind][got] += 1


async def read_response(reader):
    """Status and body of one HTTP/1.1 response (Content-Length or chunked)."""
    line = await reader.readline()
    if not line:
        raise ConnectionError("closed")
    status = int(line.split()[1])
    length, chunked, close = 0, False, False
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b""):
            break
        name, _, value = h.decode("latin-1").partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        elif name == "connection" and value.lower() == "close":
            close = True
    if chunked:
        body = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            body += chunk[:-2]
            if size == 0:
                break
    else:
        body = await reader.readexactly(length)
    return status, body, close


class Conn:
    """One kept-alive HTTP/1.1 connection, reopened when the server closes it."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.r = self.w = None

    async def request(self, raw):
        for attempt in range(2):
            if self.w is None:
                self.r, self.w = await asyncio.open_connection(self.host, self.port)
            try:
                self.w.write(raw)
                await self.w.drain()
                status, body, close = await read_response(self.r)
                if close:
                    self.close()
                return status, body
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                self.close()
                if attempt:
                    raise
        raise ConnectionError("unreachable")

    def close(self):
        if self.w is not None:
            self.w.close()
        self.r = self.w = None


def req(method, path, body=b"", headers=()):
    head = f"{method} {path} HTTP/1.1\r\nhost: soak\r\nx-api-key: {KEY}\r\n"
    for n, v in headers:
        head += f"{n}: {v}\r\n"
    if body or method == "POST":
        head += f"content-length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def paced(rate, stop, fn, workers=8):
    """Calls fn() about `rate` times a second across `workers` tasks until stop is set."""
    if rate <= 0:
        return
    interval = workers / rate

    async def one(offset):
        nxt = time.monotonic() + offset
        while not stop.is_set():
            await fn()
            nxt += interval
            delay = nxt - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                nxt = time.monotonic()

    await asyncio.gather(*(one(i * interval / workers) for i in range(workers)))


async def legit(args, stats, phase, stop):
    host, port = args.proxy.rsplit(":", 1)
    chat = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hello"}]}).encode()
    pools = {}

    def conn(kind):
        task = asyncio.current_task()
        return pools.setdefault((kind, id(task)), Conn(host, int(port)))

    async def timed(kind, raw, ok):
        t = time.monotonic()
        try:
            status, body = await conn(kind).request(raw)
        except Exception as e:  # noqa: BLE001 - any failure of a legitimate request counts
            stats.legit_failures.append(f"{kind}: {e!r}")
            return None
        if phase[0] in stats.latency:  # not while warming up
            stats.latency[phase[0]].append((kind, time.monotonic() - t))
        if status != ok:
            stats.legit_failures.append(f"{kind}: {status} {body[:120]!r}")
            return None
        return body

    async def proxy():
        await timed("proxy", req("GET", "/api/items"), 200)

    async def event():
        body = await timed("event", req("POST", "/events/soak", json.dumps({"n": random.random()}).encode(),
                                        [("content-type", "application/json")]), 202)
        if body:
            stats.acked.add(json.loads(body)["id"])

    async def ai():
        await timed("ai", req("POST", "/v1/chat/completions", chat, [("content-type", "application/json")]), 200)

    await asyncio.gather(paced(args.proxy_rate, stop, proxy, 16), paced(args.event_rate, stop, event, 8),
                         paced(args.ai_rate, stop, ai, 4))


# Each abuse: what it sends, and the answers documented for it.


async def bad_keys(args, stats, stop):
    host, port = args.proxy.rsplit(":", 1)
    stats.expected["bad key"] = {"401"}
    conns = {}

    async def one():
        c = conns.setdefault(id(asyncio.current_task()), Conn(host, int(port)))
        raw = b"GET /bad/items HTTP/1.1\r\nhost: soak\r\nx-api-key: soak-key-wrong-%d\r\n\r\n" % random.randrange(10**9)
        try:
            status, _ = await c.request(raw)
            stats.answer("bad key", str(status))
        except Exception:  # noqa: BLE001
            stats.answer("bad key", "error")

    await paced(args.bad_key_rate, stop, one, 32)


async def raw_exchange(host, port, data, wait=15.0, trickle=None):
    """Sends data (or trickles it byte by byte every `trickle` s); returns the status
    answered, or 'closed' when the server closed without one."""
    try:
        r, w = await asyncio.open_connection(host, port)
    except OSError:
        return "refused"
    try:
        if trickle:
            for b in data:
                if w.transport.is_closing() or len(r._buffer) or r.at_eof():  # noqa: SLF001
                    break  # the server answered or hung up: stop sending
                w.write(bytes([b]))
                await w.drain()
                await asyncio.sleep(trickle)
        else:
            w.write(data)
            await w.drain()
        line = await asyncio.wait_for(r.readline(), wait)
        return line.split()[1].decode() if line.startswith(b"HTTP/1.1 ") else "closed"
    except (ConnectionError, OSError, asyncio.IncompleteReadError):
        return "closed"
    except asyncio.TimeoutError:
        return "no answer"
    finally:
        w.close()


async def hostile(args, stats, stop):
    host, port = args.proxy.rsplit(":", 1)
    port = int(port)
    big_ai = b"POST /v1/chat/completions HTTP/1.1\r\nhost: soak\r\nx-api-key: " + KEY.encode() + \
        b"\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n{" % (40 << 20)
    big_event = b"POST /events/soak HTTP/1.1\r\nhost: soak\r\nx-api-key: " + KEY.encode() + \
        b"\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n{" % (2 << 20)
    nested = ("[" * 5000 + "]" * 5000).encode()
    deep_ai = req("POST", "/v1/chat/completions", b'{"model":"m","messages":' + nested + b"}",
                  [("content-type", "application/json")])
    deep_event = req("POST", "/events/soak", b'{"specversion":"1.0","id":"x","source":"s","type":"t","data":' + nested + b"}",
                     [("content-type", "application/cloudevents+json")])
    flood = b"GET /api/items HTTP/1.1\r\nhost: soak\r\n" + b"".join(
        b"x-flood-%d: %s\r\n" % (i, b"v" * 1000) for i in range(100)) + b"\r\n"
    kinds = {
        "oversized AI body": (big_ai, {"413"}),
        "oversized event": (big_event, {"413"}),
        "nested JSON on AI": (deep_ai, {"400"}),
        "nested CloudEvent": (deep_event, {"400"}),
        "header flood": (flood, {"431"}),
    }
    for k, (_, ok) in kinds.items():
        stats.expected[k] = ok

    def sender(kind, data):
        async def one():
            stats.answer(kind, await raw_exchange(host, port, data))
        return one

    await asyncio.gather(*(paced(args.hostile_rate, stop, sender(k, d), 2) for k, (d, _) in kinds.items()),
                         h2_resets(args, stats, stop, host, port))


async def h2_resets(args, stats, stop, host, port):
    """HTTP/2 (prior knowledge) connections that open 1,000 streams and reset each at once
    ("rapid reset"), then open one more and keep it: Weir answers that last stream (the
    resets cost it no answers) or ends the connection with GOAWAY when resets pile up
    before their streams are taken. Silence would be the failure."""
    stats.expected["h2 rapid reset"] = {"goaway", "answered"}
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    # HEADERS (END_STREAM|END_HEADERS) with indexed :method GET, :scheme http, :path /,
    # and a literal :authority (indexed name 1).
    block = b"\x82\x86\x84\x41\x04soak"

    def frame(kind, flags, stream, payload):
        return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload

    async def one():
        try:
            r, w = await asyncio.open_connection(host, port)
        except OSError:
            stats.answer("h2 rapid reset", "refused")
            return
        got = "no answer"
        try:
            burst = [preface]
            stream = 1
            for _ in range(1000):
                burst.append(frame(1, 0x05, stream, block) + frame(3, 0, stream, (8).to_bytes(4, "big")))
                stream += 2
            # Then one stream kept: the connection must still answer it (or have said GOAWAY).
            burst.append(frame(1, 0x05, stream, block))
            w.write(b"".join(burst))
            await w.drain()
            deadline = time.monotonic() + 10
            buf = b""
            while time.monotonic() < deadline:
                data = await asyncio.wait_for(r.read(65536), 10)
                if not data:
                    break
                buf += data
                # Walk the whole frames for a GOAWAY (type 7) or answers (HEADERS, type 1).
                i = 0
                while i + 9 <= len(buf) and i + 9 + int.from_bytes(buf[i:i + 3], "big") <= len(buf):
                    n = int.from_bytes(buf[i:i + 3], "big")
                    if buf[i + 3] == 7:
                        got = "goaway"
                    elif buf[i + 3] == 1 and got != "goaway":
                        got = "answered"
                    i += 9 + n
                buf = buf[i:]
                if got == "goaway":
                    break
        except (ConnectionError, OSError, asyncio.TimeoutError):
            pass
        finally:
            w.close()
        stats.answer("h2 rapid reset", got)

    await paced(args.hostile_rate / 4, stop, one, 1)


async def slow_clients(args, stats, stop):
    """Slowloris heads and bodies, and idle connections: Weir closes each at its timeouts
    (limits.header_timeout for heads and idle connections, limits.body_timeout for a body
    held whole) instead of keeping it forever."""
    host, port = args.proxy.rsplit(":", 1)
    port = int(port)
    stats.expected["slow head"] = {"closed", "408"}
    stats.expected["slow body"] = {"408"}
    stats.expected["idle connection"] = {"closed"}
    head = b"GET /api/items HTTP/1.1\r\nhost: soak\r\nx-api-key: " + KEY.encode() + b"\r\nx-slow: " + b"a" * 200
    body_head = req("POST", "/events/soak", b"", [("content-type", "application/json")]).replace(
        b"content-length: 0", b"content-length: 1000")

    async def slow_head():
        while not stop.is_set():
            stats.answer("slow head", await raw_exchange(host, port, head, wait=40, trickle=0.5))

    async def slow_body():
        while not stop.is_set():
            stats.answer("slow body", await raw_exchange(host, port, body_head + b"{", wait=40))

    async def idle():
        while not stop.is_set():
            try:
                r, w = await asyncio.open_connection(host, port)
            except OSError:
                stats.answer("idle connection", "refused")
                await asyncio.sleep(1)
                continue
            try:
                data = await asyncio.wait_for(r.read(1), 40)
                stats.answer("idle connection", "closed" if not data else "data")
            except asyncio.TimeoutError:
                stats.answer("idle connection", "kept open")
            except (ConnectionError, OSError):
                stats.answer("idle connection", "closed")
            finally:
                w.close()

    tasks = [slow_head() for _ in range(args.slowloris)] + [slow_body() for _ in range(args.slowloris)]
    tasks += [idle() for _ in range(args.idle_connections)]
    await asyncio.gather(*tasks)


async def watch_rss(args, stats, stop):
    while not stop.is_set():
        try:
            with open(f"/proc/{args.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        stats.rss_peak = max(stats.rss_peak, int(line.split()[1]) // 1024)
        except FileNotFoundError:
            return
        await asyncio.sleep(0.2)


def histograms(admin):
    """Weir's own latency histograms: {route: [(le, cumulative count)]}."""
    import urllib.request
    text = urllib.request.urlopen(f"http://{admin}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if not line.startswith("weir_request_duration_seconds_bucket{"):
            continue
        labels, value = line[len("weir_request_duration_seconds_bucket{"):].rsplit("} ", 1)
        parts = dict(p.split("=", 1) for p in labels.split(","))
        le = parts["le"].strip('"')
        out.setdefault(parts["route"].strip('"'), []).append(
            (float("inf") if le == "+Inf" else float(le), int(float(value))))
    return out


def p99_between(before, after, route):
    """The upper bound (ms) of the bucket holding the 99th percentile of the requests a
    route finished between two readings, and how many there were."""
    a, b = dict(after.get(route, [])), dict(before.get(route, []))
    les = sorted(a)
    counts = [a[le] - b.get(le, 0) for le in les]
    total = counts[-1] if counts else 0
    for le, c in zip(les, counts):
        if total and c >= 0.99 * total:
            return le * 1000, total
    return float("nan"), total


def delivered(sink_log):
    try:
        with open(sink_log) as f:
            return {line.strip() for line in f if line.strip() and line.strip() != "-"}
    except FileNotFoundError:
        return set()


async def measure_peak(args):
    """The keyed proxy route's peak (wrk, 32 connections, 5 s on CPU 0), measured while the
    events, AI calls and their deliveries run, so half of it is half of what the node can
    take beside them."""
    cmd = ["wrk", "-t1", "-c32", "-d5s", "-H", f"x-api-key: {KEY}", f"http://{args.proxy}/api/items"]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0"] + cmd
    out = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=60)
    for line in out.stdout.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise SystemExit(f"abuse-soak: wrk measured no peak: {out.stdout} {out.stderr}")


def open_loop(args, seconds):
    """Starts weir-load sending legitimate proxy requests at --load-rate for `seconds`: its
    latencies count from when each request was due, so Weir's queueing shows. It runs at a
    real-time priority when it can, so the abusers sharing its CPU do not pass as Weir's
    latency."""
    if not args.load_bin or args.load_rate <= 0:
        return None
    cmd = [args.load_bin, "--target", args.proxy, "--rate", str(args.load_rate), "--connections", "32",
           "--seconds", str(seconds), "--path", "/api/items", "--header", f"x-api-key: {KEY}", "--json"]
    if os.geteuid() == 0 and shutil.which("chrt"):
        cmd = ["chrt", "-f", "10"] + cmd
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


async def open_loop_result(proc):
    if proc is None:
        return None
    out, _ = await asyncio.to_thread(proc.communicate)
    try:
        return json.loads(out)
    except ValueError:
        return {"error": out}


def p99(samples):
    xs = sorted(t for _, t in samples)
    return xs[int(len(xs) * 0.99) - 1] * 1000 if len(xs) >= 100 else float("nan")


async def main():
    args = parse_args()
    stats = Stats()
    phase = ["warm-up"]
    stop_all, stop_abuse = asyncio.Event(), asyncio.Event()
    rss = asyncio.create_task(watch_rss(args, stats, stop_all))
    legit_task = asyncio.create_task(legit(args, stats, phase, stop_all))
    print(f"abuse-soak: baseline, legitimate traffic alone for {args.baseline} s "
          "(the first 3 s not counted)", flush=True)
    await asyncio.sleep(3)
    if args.load_bin and args.load_rate <= 0:
        peak = await measure_peak(args)
        args.load_rate = round(peak / 2)
        print(f"abuse-soak: peak of the keyed proxy route beside the other legitimate traffic {peak:.0f} "
              f"req/s (wrk, 5 s); legitimate proxy traffic at {args.load_rate:g} req/s, open loop", flush=True)
        await asyncio.sleep(2)
    phase[0] = "baseline"
    marks = [histograms(args.admin)]
    base_load = open_loop(args, max(1, args.baseline - 4))
    await asyncio.sleep(max(1, args.baseline - 3))
    marks.append(histograms(args.admin))
    stats.open_loop = {"baseline": await open_loop_result(base_load)}
    phase[0] = "abuse"
    print(f"abuse-soak: abuse for {args.seconds} s (bad keys {args.bad_key_rate:g}/s, "
          f"{args.idle_connections} idle connections, {args.slowloris} slow heads and bodies, "
          f"hostile requests {args.hostile_rate:g}/s each)", flush=True)
    abuse = asyncio.gather(bad_keys(args, stats, stop_abuse), hostile(args, stats, stop_abuse),
                           slow_clients(args, stats, stop_abuse))
    started = time.monotonic()
    abuse_load = open_loop(args, max(1, args.seconds - 1))
    while time.monotonic() - started < args.seconds:
        await asyncio.sleep(min(10, args.seconds - (time.monotonic() - started)))
        lat = stats.latency["abuse"]
        print(f"  {int(time.monotonic() - started)} s: RSS peak {stats.rss_peak} MiB, "
              f"legit {len(lat)} done, {len(stats.legit_failures)} failed, {len(stats.acked)} events acked",
              flush=True)
    marks.append(histograms(args.admin))
    stats.weir_side = {route: (p99_between(marks[0], marks[1], route), p99_between(marks[1], marks[2], route))
                       for route in ("api", "events", "llm", "bad")}
    stats.open_loop["abuse"] = await open_loop_result(abuse_load)
    stop_abuse.set()
    stop_all.set()
    await legit_task
    print("abuse-soak: waiting for the abusers' last connections to end", flush=True)
    await asyncio.wait_for(abuse, 60)
    alive = os.path.exists(f"/proc/{args.pid}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not stats.acked <= delivered(args.sink_log):
        await asyncio.sleep(0.5)
    missing = stats.acked - delivered(args.sink_log)
    rss.cancel()
    return report(args, stats, alive, missing)


def report(args, stats, alive, missing):
    failures = []
    print("\nabuse-soak report")
    print(f"  Weir alive at the end: {alive}")
    if not alive:
        failures.append("Weir died")
    print(f"  RSS peak: {stats.rss_peak} MiB (ceiling {args.rss_ceiling_mib} MiB)")
    if stats.rss_peak > args.rss_ceiling_mib:
        failures.append("RSS passed the ceiling")
    print(f"  events acknowledged: {len(stats.acked)}, not delivered: {len(missing)}")
    if missing:
        failures.append(f"{len(missing)} acknowledged events not delivered")
    print(f"  legitimate requests failed: {len(stats.legit_failures)} {stats.legit_failures[:5]}")
    if stats.legit_failures:
        failures.append("legitimate requests failed")
    loads = getattr(stats, "open_loop", {})
    if loads.get("baseline") or loads.get("abuse"):
        b, a = loads.get("baseline") or {}, loads.get("abuse") or {}
        print(f"  legit proxy, open loop at {args.load_rate:g}/s (weir-load): baseline {b.get('answered')} answered, "
              f"{b.get('errors')} errors, p50 {b.get('p50_ms')} ms, p99 {b.get('p99_ms')} ms; under abuse "
              f"{a.get('answered')} answered, {a.get('errors')} errors, p50 {a.get('p50_ms')} ms, "
              f"p99 {a.get('p99_ms')} ms, p99.9 {a.get('p999_ms')} ms")
        ok = set(b.get("statuses", {})) | set(a.get("statuses", {})) <= {"200"}
        if b.get("errors") or a.get("errors") or not ok or not b.get("answered") or not a.get("answered"):
            failures.append(f"open-loop legit proxy traffic failed: {b} / {a}")
        elif b.get("p99_ms") and a.get("p99_ms"):
            ratio = a["p99_ms"] / b["p99_ms"]
            print(f"    p99 under abuse {ratio:.2f}x the baseline (bound 2x)")
            if args.enforce_latency and ratio > 2:
                failures.append(f"legit open-loop proxy p99 {ratio:.2f}x the baseline")
    print("  legitimate requests from the soak's own Python client (its latency includes its own")
    print("  event loop, which the abusers share):")
    for kind in ("proxy", "event", "ai"):
        b = [s for s in stats.latency["baseline"] if s[0] == kind]
        a = [s for s in stats.latency["abuse"] if s[0] == kind]
        pb, pa = p99(b), p99(a)
        ratio = pa / pb if pb == pb and pb > 0 else float("nan")
        print(f"    legit {kind}: baseline {len(b)} p99 {pb:.2f} ms; under abuse {len(a)} p99 {pa:.2f} ms ({ratio:.2f}x)")
    print("  Weir's own p99 (upper bound of its histogram bucket), baseline -> under abuse:")
    for route, ((pb, nb), (pa, na)) in getattr(stats, "weir_side", {}).items():
        print(f"    route {route}: <= {pb:g} ms ({nb} requests) -> <= {pa:g} ms ({na} requests)")
    print("  abusive requests (answer: count):")
    for kind, expected in stats.expected.items():
        got = stats.answers.get(kind, {})
        wrong = {k: v for k, v in got.items() if k not in expected}
        print(f"    {kind}: {got} (documented: {sorted(expected)})")
        if not got:
            failures.append(f"{kind}: none sent")
        if wrong:
            failures.append(f"{kind}: undocumented answers {wrong}")
    print("  result:", "PASSED" if not failures else "FAILED: " + "; ".join(failures))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
