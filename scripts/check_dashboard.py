"""The Grafana dashboard may only query metrics the code emits (so it cannot drift from them).
Run from the repository root: python3 scripts/check_dashboard.py"""
import json
import re
import subprocess
import sys

d = json.load(open("deploy/grafana/skillup-dashboard.json"))
exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
if not exprs:
    sys.exit("the dashboard has no queries")
src = subprocess.run(
    ["grep", "-rhoE", r'metrics::(counter|gauge|histogram)!\(\s*"[a-z_]+"', "--include=*.rs",
     "services", "edge", "cli"],
    capture_output=True, text=True, check=True,
).stdout
emitted = set(re.findall(r'"([a-z_]+)"', src))
used = set()
for e in exprs:
    for name in re.findall(r"\b([a-z_]+)\{", e):
        used.add(name[: -len("_bucket")] if name.endswith("_bucket") else name)
missing = sorted(used - emitted)
if missing:
    sys.exit(f"the dashboard queries metrics nothing emits: {missing}")
print(f"grafana: {len(exprs)} queries over {len(used)} metrics, all emitted by the code")
