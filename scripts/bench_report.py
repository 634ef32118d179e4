"""docs/BENCHMARKS.md from the raw output of scripts/bench's rounds.
Usage: python3 scripts/bench_report.py OUT_DIR ROUNDS SECONDS"""
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys

out, rounds, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def lines(kind, r):
    path = os.path.join(out, f"{kind}-{r}.txt")
    return open(path).read().splitlines() if os.path.exists(path) else []


def jsons(kind, r):
    res = []
    for line in lines(kind, r):
        line = line.strip()
        if line.startswith("{"):
            try:
                res.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return res


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def rng(values):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    lo, hi = min(values), max(values)
    return f"{lo:,.2f}–{hi:,.2f}" if lo != hi else f"{lo:,.2f}"


R = range(1, rounds + 1)

# ---- edge: "direct c=64 rps p50 p99"
edge = {}
for r in R:
    for line in lines("edge", r):
        m = re.match(r"^(direct|edge|nginx|edge_h2|nginx_h2) c=(\d+) ([\d.]+) ([\d.]+) ([\d.]+)$", line.strip())
        if m:
            edge.setdefault((m[1], int(m[2])), []).append(tuple(map(float, m.group(3, 4, 5))))


def edge_med(path, conns, i):
    return med([v[i] for v in edge.get((path, conns), [])])


# ---- auth
def scen(kind, name, field, nth=0):
    vals = []
    for r in R:
        found = [j for j in jsons(kind, r) if j.get("scenario") == name]
        if len(found) > nth:
            vals.append(found[nth].get(field))
    return vals


# ---- ai: lines in order: direct@100, sync@100, direct@500, sync@500, direct@100, stream@100,
# queued (worker on), queued (worker off)
def ai(name, rate, field, nth=0):
    vals = []
    for r in R:
        found = [j for j in jsons("ai", r) if j.get("scenario") == name and (rate is None or j.get("rate") == rate)]
        if len(found) > nth:
            vals.append(found[nth].get(field))
    return vals


def overhead(rate, field, scenario="sync", direct_nth=0):
    vals = []
    for r in R:
        d = [j for j in jsons("ai", r) if j.get("scenario") == "direct" and j.get("rate") == rate]
        s = [j for j in jsons("ai", r) if j.get("scenario") == scenario and j.get("rate") == rate]
        if len(d) > direct_nth and s:
            vals.append(s[0][field] - d[direct_nth][field])
    return vals


machine = (
    f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
    f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, "
    f"{platform.system()} {platform.release()}"
)
try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    commit = "?"

p = print
p("# SkillUp benchmarks\n")
p(f"Written by `scripts/bench {rounds} {secs}` on {datetime.date.today()} at commit `{commit}`.\n")
p(f"**Machine**: {machine}. Everything — the platform, PostgreSQL, Redis, RabbitMQ, Nginx, the")
p("fake provider and the load generators — shares these cores, so absolute numbers are low and")
p("drift between runs; read the ratios, each taken against an anchor measured in the same round.\n")
p(f"**Method**: {rounds} round(s); in each, every benchmark starts its own release stack on the real")
p(f"servers and drives it from a separate load process for {secs} s per measurement. Figures are")
p("medians over the rounds, with the range where it matters. The scripts are the method:")
p("`scripts/bench-edge`, `bench-auth`, `bench-ai`, `bench-notify`, `bench-payment`.\n")

p("## Edge vs Nginx `auth_request` vs direct gRPC\n")
p("One authenticated GET (`/api/auth/me` → auth's `GetMe`): the RPC called directly over gRPC (the")
p("floor), through the edge (token check from its decision cache + stamp, then the RPC), and")
p("through Nginx with `auth_request` to the edge's validate endpoint, proxying the same route.")
p("`skillup up` calls its services in-process (`edge.in_process`); the *over HTTP/2* rows are a")
p("second `up` with that off, its edge calling the services over loopback HTTP/2 as a split")
p("deployment (`skillup serve edge` + `serve auth`) does, with Nginx in front of that edge.\n")
p("| path | connections | req/s | p50 ms | p99 ms |")
p("|---|---|---|---|---|")
for conns in (64, 1):
    for path, label in (("direct", "direct gRPC"), ("edge", "edge"), ("nginx", "Nginx `auth_request` → edge"),
                        ("edge_h2", "edge, services over HTTP/2"), ("nginx_h2", "Nginx `auth_request` → edge, services over HTTP/2")):
        if (path, conns) in edge:
            p(f"| {label} | {conns} | {edge_med(path, conns, 0):,.0f} | {edge_med(path, conns, 1):.2f} | {edge_med(path, conns, 2):.2f} |")
# Ratios round by round (each against its own round's anchor), then their median.
tput = [e[0] / n[0] for e, n in zip(edge.get(("edge", 64), []), edge.get(("nginx", 64), []))]
p99s = [e[2] / n[2] for e, n in zip(edge.get(("edge", 64), []), edge.get(("nginx", 64), []))]
over = [e[1] - d[1] for e, d in zip(edge.get(("edge", 1), []), edge.get(("direct", 1), []))]
p(f"\n- edge / Nginx throughput at 64 connections: **{med(tput):.2f}×** (per round {rng(tput)}×; goal ≥ 2×);"
  f" p99 edge / Nginx {med(p99s):.2f}× (per round {rng(p99s)}×; goal ≤ 1×)")
p(f"- edge p50 over direct gRPC at 1 connection: **{med(over):+.3f} ms** (per round {rng(over)} ms; goal ≤ 1 ms)")
tput2 = [e[0] / n[0] for e, n in zip(edge.get(("edge_h2", 64), []), edge.get(("nginx_h2", 64), []))]
p99s2 = [e[2] / n[2] for e, n in zip(edge.get(("edge_h2", 64), []), edge.get(("nginx_h2", 64), []))]
over2 = [e[1] - d[1] for e, d in zip(edge.get(("edge_h2", 1), []), edge.get(("direct", 1), []))]
if tput2:
    p(f"- services over HTTP/2 (split deployment): edge / Nginx **{med(tput2):.2f}×** (per round {rng(tput2)}×);"
      f" p99 {med(p99s2):.2f}×; edge p50 over direct {med(over2):+.3f} ms")
p("")

p("## Auth: ValidateToken, and logins against raw bcrypt\n")
p("| measure | median | range |")
p("|---|---|---|")
v = scen("auth", "validate", "per_second")
p(f"| ValidateToken, 64 callers | {med(v):,.0f}/s, p50 {med(scen('auth', 'validate', 'p50_ms')):.2f} ms, p99 {med(scen('auth', 'validate', 'p99_ms')):.2f} ms | {rng(v)} /s |")
logins, bcrypt = scen("auth", "login", "per_second"), scen("auth", "bcrypt", "per_second")
ratios = [a / b for a, b in zip(logins, bcrypt) if a and b]
p(f"| logins/s vs raw bcrypt (cost 12, same round) | {med(logins):.1f}/s vs {med(bcrypt):.1f}/s = **{med(ratios) * 100:.0f} %** | {rng([x * 100 for x in ratios])} % |")
under = scen("auth", "validate-under-login", "p99_ms")
idle = scen("auth", "validate", "p99_ms")
p(f"| ValidateToken p99 during a login flood | {med(under):.2f} ms ({med([a / b for a, b in zip(under, idle) if a and b]):.2f}× idle) | |\n")

p("## Generation: overhead over the provider, queued tasks, streaming\n")
p("The fake provider answers after a fixed 20 ms; the same driver measures it directly at the same")
p("rate, and the overhead is the platform's latency minus that.\n")
p("| measure | median | range | goal |")
p("|---|---|---|---|")
for rate in (100, 500):
    o50, o99 = overhead(rate, "p50_ms"), overhead(rate, "p99_ms")
    ok = ai("sync", rate, "per_second")
    p(f"| sync overhead at {rate} req/s (achieved {med(ok):,.0f}/s) | p50 **{med(o50):.2f} ms**, p99 {med(o99):.2f} ms | p50 {rng(o50)} ms | ≤ 2 ms p50 |")
fo = overhead(100, "p50_ms", scenario="stream", direct_nth=1)
p(f"| streaming first-token overhead at 100 req/s | p50 **{med(fo):.2f} ms** | {rng(fo)} ms | ≤ 5 ms |")
q_off = ai("queued", None, "per_second", nth=1)
q_on = ai("queued", None, "per_second", nth=0)
p(f"| queued tasks accepted (202 after the publisher confirm), worker off | **{med(q_off):,.0f}/s** | {rng(q_off)} /s | ≥ 1,000/s |")
p(f"| queued tasks accepted while the same process runs them | {med(q_on):,.0f}/s | {rng(q_on)} /s | |\n")

p("## Notifications: WebSocket memory and event latency\n")
p("| measure | median | range | goal |")
p("|---|---|---|---|")
bpc = [j.get("bytes_per_idle_connection") for r in R for j in jsons("notify", r) if "bytes_per_idle_connection" in j]
held = [j.get("idle_connections") for r in R for j in jsons("notify", r) if "idle_connections" in j]
l50 = [j.get("latency_p50_ms") for r in R for j in jsons("notify", r) if "latency_p50_ms" in j]
l99 = [j.get("latency_p99_ms") for r in R for j in jsons("notify", r) if "latency_p99_ms" in j]
lost = [j.get("events_sent", 0) - j.get("events_delivered", 0) for r in R for j in jsons("notify", r) if "events_sent" in j]
p(f"| idle WebSockets held | {med(held):,.0f} | | 10,000 |")
p(f"| memory per idle WebSocket | **{med(bpc) / 1000:.1f} KB** | {rng([b / 1000 for b in bpc])} KB | ≤ 20 KB |")
p(f"| event → socket at 1,000 events/s | p50 **{med(l50):.2f} ms**, p99 {med(l99):.2f} ms; undelivered {max(lost) if lost else 'n/a'} | p50 {rng(l50)} ms | |\n")

p("## Money and quota against pgbench\n")
p("| measure | median | share of pgbench `-N` (same round) |")
p("|---|---|---|")
pg = scen("payment", "pgbench simple-update (anchor)", "per_second")
for name, label in (("spread", "charges spread over 32 wallets"), ("hot", "charges on one wallet"), ("reserve+commit", "ReserveQuota + CommitQuota pairs")):
    v = scen("payment", name, "per_second")
    share = [a / b * 100 for a, b in zip(v, pg) if a and b]
    p(f"| {label} | {med(v):,.0f}/s | {med(share):.0f} % |")
p(f"| `pgbench -N` (anchor) | {med(pg):,.0f} TPS | 100 % |\n")
missing = [name for name in ("spread", "hot", "reserve+commit", "pgbench simple-update (anchor)")
           if len(scen("payment", name, "per_second")) < rounds]
if missing:
    p(f"Incomplete: {', '.join(missing)} measured in fewer than {rounds} rounds (a round failed;"
      " its output is in target/bench). Shares use only rounds with both figures.\n")

p("## Footprint\n")
rss = [j["rss_kib"] for r in R for j in jsons("rss", r) if "rss_kib" in j]
p(f"- idle RSS of `skillup up` (every component, embedded defaults, 5 s after ready): **{med(rss) / 1024:.1f} MiB** (range {rng([x / 1024 for x in rss])} MiB)")
p("\nEarlier runs, A/B comparisons and where the time went: [benchmarks-history.md](benchmarks-history.md).")
