"""The deployment files, run against the binary.

For Docker Compose (deploy/docker-compose.yml) and Kubernetes (every Deployment and Job in
k8s/), this renders the environment each SkillUp container gets — the image's ENV, then
compose's `environment` (with `${VAR:-default}` as compose interpolates it, from an empty
shell) or the ConfigMaps, Secrets, `envFrom` and `env` of the manifests — and the files it has
mounted (volumes, Secret and ConfigMap items, created in a temporary directory that stands for
each mount path; `skillup-keys` is made as the docs say, by `skillup keys init`), then runs the
container's own command with exactly that environment, on this machine's real PostgreSQL,
Redis and RabbitMQ. One-shot containers (keys, migrate) must exit 0; every server must answer
ready to `skillup health` (the compose health check) within the time allowed. So a variable or
a mount one component cannot live with fails here, as it would fail to start there.

What is rewritten, and only this: the servers' addresses (DATABASE_URL, REDIS_URL, AMQP_URL:
this machine's, on a fresh database, a fresh cache prefix and fresh queue names), the listen
addresses (free loopback ports), the addresses of the other components (the same names,
resolved to those ports), and the mount paths (to their temporary directories).

Usage: python check_deploy_run.py <skillup binary>
"""

import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import yaml

from free_port import free_ports

BIN = os.path.abspath(sys.argv[1])
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PG = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
AMQP = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
COMPONENTS = ["auth", "prompt", "payment", "subscribe", "ai", "worker", "notification", "edge"]
READY_SECS = 120


def fail(msg):
    sys.exit(f"deploy-run: {msg}")


GIVEN = set()


def free_port():
    """A free loopback port below the ephemeral range (see free_port.py), never one already given."""
    port = free_ports(1, GIVEN)[0]
    GIVEN.add(port)
    return port


def image_env():
    """`ENV` of deploy/Dockerfile's final stage."""
    text = open(os.path.join(ROOT, "deploy/Dockerfile")).read().replace("\\\n", " ")
    env = {}
    for line in text.splitlines():
        if line.startswith("FROM "):
            env = {}
        if line.startswith("ENV "):
            for pair in line[4:].split():
                k, _, v = pair.partition("=")
                env[k] = v
    return env


def interpolate(value):
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}` from an empty shell."""
    if not isinstance(value, str):
        return "" if value is None else str(value)
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?-([^}]*))?\}", lambda m: m.group(3) or "", value)


class Container:
    def __init__(self, platform, name, args, env, mounts, job):
        self.platform, self.name, self.args, self.env = platform, name, args, env
        self.mounts = mounts  # container path -> host directory
        self.job = job
        self.grpc, self.http = free_port(), free_port()
        self.ops = free_port()
        self.proc = None
        self.log = None


def compose_containers(work):
    d = yaml.safe_load(open(os.path.join(ROOT, "deploy/docker-compose.yml")))
    volumes = {}
    out = []
    for name, svc in d["services"].items():
        if not str(svc.get("image", "")).startswith("skillup"):
            continue
        env = image_env()
        raw = svc.get("environment") or {}
        if isinstance(raw, list):
            raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
        env.update({k: interpolate(v) for k, v in raw.items()})
        mounts = {}
        for v in svc.get("volumes") or []:
            src, _, rest = v.partition(":")
            target = rest.split(":")[0]
            if src.startswith(".") or src.startswith("/"):
                mounts[target] = os.path.join(ROOT, "deploy", src)
            else:
                mounts[target] = volumes.setdefault(src, tempfile.mkdtemp(prefix=f"vol-{src}-", dir=work))
        for t in svc.get("tmpfs") or []:
            mounts[t] = tempfile.mkdtemp(prefix="tmpfs-", dir=work)
        command = svc.get("command")
        job = svc.get("restart") == "no"
        out.append(Container("compose", name, command, env, mounts, job))
    # The one-shot containers first, in compose's dependency order: keys, then migrate.
    out.sort(key=lambda c: (not c.job, c.name != "keys", c.name))
    return out


def k8s_containers(work):
    docs = []
    k = yaml.safe_load(open(os.path.join(ROOT, "k8s/kustomization.yaml")))
    for f in k["resources"]:
        docs += [d for d in yaml.safe_load_all(open(os.path.join(ROOT, "k8s", f))) if d]
    config_maps = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d["kind"] == "ConfigMap"}
    secrets = {}
    for d in docs:
        if d["kind"] == "Secret":
            data = dict(d.get("stringData") or {})
            for key, v in (d.get("data") or {}).items():
                data[key] = base64.b64decode(v).decode()
            secrets[d["metadata"]["name"]] = data
    # `skillup-keys` is made from files, as the manifests' comments say.
    keys_dir = os.path.join(work, "skillup-keys-src")
    run_checked([BIN, "keys", "init", "--dir", keys_dir], clean_env({}), "k8s: skillup keys init")
    secrets["skillup-keys"] = {
        f: open(os.path.join(keys_dir, f)).read()
        for f in os.listdir(keys_dir)
        if not f.endswith(".tmp") and os.path.isfile(os.path.join(keys_dir, f))
    }
    # One mesh Secret per component, as secrets.yaml makes them.
    mesh = os.path.join(keys_dir, "mesh")
    for c in ("edge", "auth", "prompt", "subscribe", "payment", "ai", "worker", "notification"):
        secrets[f"skillup-mesh-{c}"] = {
            "ca.pem": open(os.path.join(mesh, "ca.pem")).read(),
            "cert.pem": open(os.path.join(mesh, f"{c}.pem")).read(),
            "key.pem": open(os.path.join(mesh, f"{c}.key")).read(),
        }
    out = []
    for d in docs:
        if d["kind"] not in ("Deployment", "Job"):
            continue
        pod = d["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for c in pod["containers"]:
            env = image_env()
            for src in c.get("envFrom") or []:
                if "configMapRef" in src:
                    env.update(config_maps[src["configMapRef"]["name"]])
                if "secretRef" in src:
                    env.update(secrets[src["secretRef"]["name"]])
            for e in c.get("env") or []:
                if "value" in e:
                    env[e["name"]] = str(e["value"])
                else:
                    ref = e["valueFrom"]
                    if "secretKeyRef" in ref:
                        env[e["name"]] = secrets[ref["secretKeyRef"]["name"]][ref["secretKeyRef"]["key"]]
                    elif "configMapKeyRef" in ref:
                        env[e["name"]] = config_maps[ref["configMapKeyRef"]["name"]][ref["configMapKeyRef"]["key"]]
            mounts = {}
            for m in c.get("volumeMounts") or []:
                host = tempfile.mkdtemp(prefix=f"{d['metadata']['name']}-{m['name']}-", dir=work)
                v = volumes[m["name"]]
                source = None
                if "secret" in v:
                    source = (secrets[v["secret"]["secretName"]], v["secret"].get("items"))
                elif "configMap" in v:
                    source = (config_maps[v["configMap"]["name"]], v["configMap"].get("items"))
                if source:
                    data, items = source
                    pairs = [(i["key"], i["path"]) for i in items] if items else [(k, k) for k in data]
                    for key, path in pairs:
                        if key not in data:
                            fail(f"k8s: {d['metadata']['name']} mounts {key}, which its Secret/ConfigMap lacks")
                        with open(os.path.join(host, path), "w") as f:
                            f.write(data[key])
                        os.chmod(os.path.join(host, path), 0o400)
                mounts[m["mountPath"]] = host
            out.append(Container("k8s", d["metadata"]["name"], c.get("args") or [], env, mounts, d["kind"] == "Job"))
    out.sort(key=lambda c: not c.job)
    return out


def clean_env(env):
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"), **env}


def run_checked(args, env, what):
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        fail(f"{what} exited {res.returncode}:\n{res.stderr[-3000:]}")
    return res


def rewrite(c, by_name, db_url, scope):
    env = dict(c.env)
    # The mounts: container paths to their directories (the longest mount path that holds
    # the value; once, so a directory made under /tmp is not taken for the /tmp mount).
    for k, v in env.items():
        for path in sorted(c.mounts, key=len, reverse=True):
            if v == path or v.startswith(path.rstrip("/") + "/"):
                env[k] = c.mounts[path] + v[len(path):]
                break
    # The data directory, when no volume stands for it (the image's own, read-only root).
    data_dir = env.get("SKILLUP_DATA_DIR", "")
    if data_dir.startswith("/") and not any(data_dir.startswith(m) for m in c.mounts.values()):
        env["SKILLUP_DATA_DIR"] = tempfile.mkdtemp(prefix=f"{c.name}-data-", dir=scope["work"])
        # Volumes mounted below it keep their contents there (compose: keys, outbox).
        for path, host in c.mounts.items():
            if path.startswith(data_dir.rstrip("/") + "/"):
                rel = path[len(data_dir.rstrip("/")) + 1:]
                os.symlink(host, os.path.join(env["SKILLUP_DATA_DIR"], rel))
    # The servers of this machine, on a fresh database and fresh names.
    for k in ("DATABASE_URL", "REDIS_URL", "AMQP_URL"):
        if k in env:
            env[k] = {"DATABASE_URL": db_url, "REDIS_URL": REDIS, "AMQP_URL": AMQP}[k]
    env["SKILLUP_CACHE_PREFIX"] = scope["prefix"] + ":"
    env["SKILLUP_BUS__EXCHANGE"] = scope["prefix"] + ".events"
    env["SKILLUP_BUS__QUEUE_PREFIX"] = scope["prefix"] + "."
    # Listen on free loopback ports.
    env["SKILLUP_GRPC_ADDR"] = f"127.0.0.1:{c.grpc}"
    env["SKILLUP_HTTP_ADDR"] = f"127.0.0.1:{c.http}"
    if "SKILLUP_EDGE__OPS_ADDR" in env:
        env["SKILLUP_EDGE__OPS_ADDR"] = f"127.0.0.1:{c.ops}"
    # The other components, by the names the files use.
    def host(m):
        # `auth-grpc` is auth's headless Service: the same pods.
        other = by_name.get(m.group(2)) or by_name.get(m.group(2).removesuffix("-grpc"))
        return f"{m.group(1)}://127.0.0.1:{other.grpc}" if other else m.group(0)
    for k, v in env.items():
        env[k] = re.sub(r"(https?)://([a-z][a-z0-9-]*)(?:\.[a-z0-9.-]+)?:50051", host, v)
    return env


def run_platform(name, containers, work):
    scope = {"prefix": f"deploy.{name}.{uuid.uuid4().hex[:8]}", "work": work}
    db = f"skillup_deploy_{name}_{uuid.uuid4().hex[:8]}"
    base = PG.rsplit("/", 1)[0]
    subprocess.run(["psql", PG, "-qc", f'CREATE DATABASE "{db}"'], check=True, capture_output=True)
    db_url = f"{base}/{db}"
    by_name = {c.name: c for c in containers if not c.job}
    servers = []
    try:
        for c in containers:
            env = clean_env(rewrite(c, by_name, db_url, scope))
            if c.job:
                run_checked([BIN, *c.args], env, f"{name}: {c.name} ({' '.join(c.args)})")
                print(f"{name}: {c.name} ({' '.join(c.args)}) exited 0")
                continue
            c.env_run = env
            c.log = open(os.path.join(work, f"{name}-{c.name}.log"), "w+")
            c.proc = subprocess.Popen([BIN, *c.args], env=env, stdout=c.log, stderr=subprocess.STDOUT)
            servers.append(c)
        deadline = time.time() + READY_SECS
        waiting = list(servers)
        while waiting:
            for c in list(waiting):
                if c.proc.poll() is not None:
                    c.log.seek(0)
                    fail(f"{name}: {c.name} ({' '.join(c.args)}) exited {c.proc.returncode}:\n{c.log.read()[-3000:]}")
                health = subprocess.run([BIN, "health", "--timeout-ms", "1000"], env=c.env_run, capture_output=True)
                if health.returncode == 0:
                    waiting.remove(c)
            if waiting and time.time() > deadline:
                names = ", ".join(c.name for c in waiting)
                said = []
                for c in waiting:
                    # Why it is not ready: its last health answer and the end of its log.
                    health = subprocess.run([BIN, "health", "--timeout-ms", "1000"], env=c.env_run, capture_output=True, text=True)
                    c.log.seek(0)
                    said.append(f"--- {c.name}: health: {(health.stdout + health.stderr).strip()[-1500:]}\n{c.log.read()[-3000:]}")
                fail(f"{name}: not ready within {READY_SECS} s: {names}\n" + "\n".join(said))
            time.sleep(0.5)
        print(f"{name}: {', '.join(c.name for c in servers)} ready with the files' environment and mounts")
    finally:
        for c in servers:
            if c.proc and c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
        for c in servers:
            if c.proc:
                try:
                    c.proc.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    c.proc.kill()
        subprocess.run(["psql", PG, "-qc", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'], capture_output=True)


def main():
    work = tempfile.mkdtemp(prefix="skillup-deploy-run-")
    try:
        compose = compose_containers(work)
        found = {c.name for c in compose}
        missing = set(COMPONENTS) - found
        if missing:
            fail(f"compose: no container for {sorted(missing)}")
        run_platform("compose", compose, work)
        k8s = k8s_containers(work)
        missing = set(COMPONENTS) - {c.name for c in k8s}
        if missing:
            fail(f"k8s: no Deployment for {sorted(missing)}")
        run_platform("k8s", k8s, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
