#!/usr/bin/env python3
"""A stand-in for an inference engine, for serving tests against a real Slurm cluster.

It takes the command lines clusterkit's serving templates give the real engines and behaves
like them where the tests look, on loopback only::

    fake_engine.py serve MODEL --tensor-parallel-size 8 ... [--nnodes --node-rank --master-addr
                   --master-port --headless --port --distributed-executor-backend]   # vllm serve
    fake_engine.py --model-path MODEL --tp 16 --host 0.0.0.0 --port P [--nnodes --node-rank
                   --dist-init-addr HOST:PORT] [--pp-size]               # sglang.launch_server
    fake_engine.py start --head --node-ip-address A --port P --block    # ray start (head)
    fake_engine.py start --address A:P --node-ip-address A --block      # ray start (worker)

Unknown flags are refused (exit 2), like the engines' own parsers.

Ranks. With ``--nnodes N > 1`` rank 0 listens on the master port (``--master-addr/--master-port``,
or SGLang's ``--dist-init-addr``) and every other rank connects and says what it was given. Rank 0
checks that the ranks are 1..N-1, each once, that they agree on the node count, master, model and
parallel sizes, that the rank each was given is its own ``$SLURM_PROCID``, that only ranks >= 1
run ``--headless`` (vLLM), and that tp x pp equals N times the GPUs each task sees
(``CUDA_VISIBLE_DEVICES``: tp is the total over the nodes). Anything wrong: every rank exits 2
with the reason. Then rank 0 "loads the weights" (``FAKE_ENGINE_LOAD_S``, default 0.5) and serves
HTTP: ``/health`` and ``/health_generate`` (200), ``/v1/models``; before that, connections are
refused, as a starting engine's. A rank that loses another (its connection closes) exits 3.

Ray: the head listens on its port and counts the GPUs of the nodes that join; ``vllm serve
--distributed-executor-backend ray`` waits (via ``$RAY_ADDRESS``) until the cluster has tp x pp
GPUs, then serves.

Environment (the job inherits the submitter's):

``FAKE_ENGINE_DIE_RANK``   this rank dies (exit ``FAKE_ENGINE_DIE_CODE``, default 3) after
                           ``FAKE_ENGINE_DIE_AFTER`` seconds (default 1), with a traceback-like tail
``FAKE_ENGINE_API_DIES_AFTER``  rank 0's HTTP server stops after that many seconds of serving; the
                           process (the "engine") lives on
``FAKE_ENGINE_LOAD_S``     seconds between the ranks meeting and rank 0's HTTP server starting
``FAKE_ENGINE_RECORD_DIR`` each rank writes what it was given (argv, rank, env) there as
                           ``<job>.rank<N>.json``

Everything binds to 127.0.0.1 (an address given outside 127/8 is replaced by it): tests send no
traffic anywhere else.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

LOOPBACK = "127.0.0.1"
JOIN_TIMEOUT = 60.0
T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"fake-engine: {msg}", flush=True)


def fail(msg: str, code: int = 2) -> None:
    say(f"error: {msg}")
    os._exit(code)


def local(addr: Optional[str]) -> str:
    return addr if addr and addr.startswith("127.") else LOOPBACK


def gpus() -> int:
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return len([g for g in cvd.split(",") if g.strip()]) if cvd else 0


# --------------------------------------------------------------------------- parsers
class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        fail(f"{self.prog}: {message}")


def vllm_parser() -> Parser:
    p = Parser(prog="vllm serve", allow_abbrev=False)
    p.add_argument("model")
    p.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    p.add_argument("--pipeline-parallel-size", "-pp", type=int, default=1)
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--node-rank", type=int, default=0)
    p.add_argument("--master-addr", default=None)
    p.add_argument("--master-port", type=int, default=None)
    p.add_argument("--headless", action="store_true")
    p.add_argument("--distributed-executor-backend", choices=["mp", "ray", "uni", "external_launcher"])
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--max-model-len", type=int, default=None)
    return p


def sglang_parser() -> Parser:
    p = Parser(prog="sglang.launch_server", allow_abbrev=False)
    p.add_argument("--model-path", required=True)
    p.add_argument("--tp", "--tp-size", "--tensor-parallel-size", dest="tp", type=int, default=1)
    p.add_argument("--pp-size", dest="pp", type=int, default=1)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=30000)
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--node-rank", type=int, default=0)
    p.add_argument("--dist-init-addr", default=None)
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--mem-fraction-static", type=float, default=None)
    return p


def ray_parser() -> Parser:
    p = Parser(prog="ray start", allow_abbrev=False)
    p.add_argument("--head", action="store_true")
    p.add_argument("--address", default=None)
    p.add_argument("--node-ip-address", default=None)
    p.add_argument("--port", type=int, default=6379)
    p.add_argument("--block", action="store_true")
    return p


# --------------------------------------------------------------------------- wire
def send(sock: socket.socket, doc: dict[str, Any]) -> None:
    sock.sendall((json.dumps(doc) + "\n").encode())


def recv(f: Any) -> Optional[dict[str, Any]]:
    line = f.readline()
    if not line:
        return None
    return json.loads(line)


def connect(host: str, port: int, timeout: float = JOIN_TIMEOUT) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection((local(host), port), timeout=5)
        except OSError as e:
            if time.monotonic() > deadline:
                fail(f"cannot reach {host}:{port} within {timeout:g}s: {e}", 3)
            time.sleep(0.2)


def die_timer(rank: int) -> None:
    want = os.environ.get("FAKE_ENGINE_DIE_RANK")
    if want is None or not want.strip().isdigit() or int(want) != rank:
        return
    after = float(os.environ.get("FAKE_ENGINE_DIE_AFTER", "1"))
    code = int(os.environ.get("FAKE_ENGINE_DIE_CODE", "3"))

    def _die() -> None:
        time.sleep(max(0.0, after - (time.monotonic() - T0)))
        say(f"rank {rank}: dying as told (FAKE_ENGINE_DIE_RANK={rank})")
        print("Traceback (most recent call last):", flush=True)
        print(f"RuntimeError: CUDA error: an illegal memory access was encountered (fake, rank {rank})", flush=True)
        os._exit(code)

    threading.Thread(target=_die, daemon=True).start()


def record(kind: str, argv: list[str], rank: int, extra: dict[str, Any]) -> None:
    doc = {"kind": kind, "argv": argv, "rank": rank, "node": os.environ.get("SLURMD_NODENAME"),
           "procid": os.environ.get("SLURM_PROCID"), "gpus": gpus(),
           "env": {k: os.environ.get(k) for k in ("VLLM_HOST_IP", "MASTER_ADDR", "GLOO_SOCKET_IFNAME",
                                                  "NCCL_SOCKET_IFNAME", "NCCL_IB_HCA", "RAY_ADDRESS",
                                                  "CUDA_VISIBLE_DEVICES", "NODE_RANK")}, **extra}
    say("given: " + json.dumps(doc, sort_keys=True))
    where = os.environ.get("FAKE_ENGINE_RECORD_DIR")
    if where:
        job = os.environ.get("SLURM_JOB_ID", "nojob")
        path = os.path.join(where, f"{job}.{kind}.rank{rank}.json")
        with open(path + ".tmp", "w") as fh:
            json.dump(doc, fh)
        os.replace(path + ".tmp", path)


# --------------------------------------------------------------------------- ranks
def rendezvous(me: dict[str, Any], nnodes: int, rank: int, host: str, port: int) -> None:
    """Rank 0 collects every rank's view and checks it; the others report and then watch rank 0."""
    if nnodes <= 1:
        return
    if rank == 0:
        srv = socket.create_server((local(host), port))
        srv.settimeout(JOIN_TIMEOUT)
        peers: dict[int, tuple[socket.socket, Any]] = {}
        others: list[socket.socket] = []
        problems: list[str] = []
        while len(peers) < nnodes - 1:
            try:
                conn, _ = srv.accept()
            except socket.timeout:
                fail(f"rank 0: only ranks {sorted(peers)} of 1..{nnodes - 1} joined within {JOIN_TIMEOUT:g}s", 3)
            f = conn.makefile("r")
            view = recv(f)
            if view is None:
                continue
            r = view.get("rank")
            if not isinstance(r, int) or not 1 <= r < nnodes:
                problems.append(f"a rank said it was rank {r!r} (want 1..{nnodes - 1})")
            elif r in peers:
                problems.append(f"rank {r} joined twice ({view.get('node')} and {peers[r][1].get('node')})")
            for key in ("nnodes", "master", "model", "tp", "pp"):
                if view.get(key) != me.get(key):
                    problems.append(f"rank {r} has {key}={view.get(key)!r}, rank 0 has {me.get(key)!r}")
            if view.get("problem"):
                problems.append(f"rank {r}: {view['problem']}")
            if problems:
                others.append(conn)
                break
            peers[r] = (conn, view)
        if problems:
            for conn in [c for c, _ in peers.values()] + others:
                send(conn, {"ok": False, "why": "; ".join(problems)})
            fail("rank 0: the ranks disagree: " + "; ".join(problems))
        for conn, _ in peers.values():
            send(conn, {"ok": True})
        say(f"rank 0: all {nnodes} ranks joined: " + ", ".join(
            f"rank {r} on {v.get('node')} ({v.get('host_ip')})" for r, (_, v) in sorted(peers.items())))

        def watch(r: int, conn: socket.socket) -> None:
            f = conn.makefile("r")
            while f.readline():
                pass
            say(f"rank 0: lost rank {r}: the engine cannot go on")
            os._exit(3)

        for r, (conn, _) in peers.items():
            threading.Thread(target=watch, args=(r, conn), daemon=True).start()
        return
    sock = connect(host, port)
    send(sock, me)
    f = sock.makefile("r")
    answer = recv(f)
    if answer is None or not answer.get("ok"):
        fail(f"rank {rank}: refused by rank 0: {(answer or {}).get('why', 'connection closed')}")
    say(f"rank {rank}: joined rank 0 at {host}:{port}")

    def watch0() -> None:
        while f.readline():
            pass
        say(f"rank {rank}: lost rank 0: the engine cannot go on")
        os._exit(3)

    threading.Thread(target=watch0, daemon=True).start()


def serve_http(port: int, model: str, paths: tuple[str, ...]) -> None:
    load = float(os.environ.get("FAKE_ENGINE_LOAD_S", "0.5"))
    say(f"loading weights ({load:g}s)")
    time.sleep(load)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path in paths:
                body, ctype = b"", "text/plain"
            elif self.path == "/v1/models":
                body = json.dumps({"object": "list", "data": [{"id": model, "object": "model",
                                                                "owned_by": "fake"}]}).encode()
                ctype = "application/json"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer((os.environ.get("FAKE_ENGINE_BIND", LOOPBACK), port), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    say(f"serving {model} on http://{httpd.server_address[0]}:{port} ({', '.join(paths)}, /v1/models)")
    stop_after = os.environ.get("FAKE_ENGINE_API_DIES_AFTER")
    if stop_after:
        time.sleep(float(stop_after))
        httpd.shutdown()
        httpd.server_close()
        say("the API server stopped; the engine lives on")


def block() -> None:
    while True:
        time.sleep(3600)


def world_problem(tp: int, pp: int, nnodes: int) -> Optional[str]:
    n = gpus()
    if n and nnodes > 1 and tp * pp != nnodes * n:
        return f"tp {tp} x pp {pp} = {tp * pp} GPUs, but {nnodes} nodes of {n} GPUs = {nnodes * n} (tp is the total)"
    return None


def rank_problem(rank: int) -> Optional[str]:
    procid = os.environ.get("SLURM_PROCID")
    if procid is not None and procid != str(rank):
        return f"given --node-rank {rank} but this task is SLURM_PROCID {procid}"
    return None


def run_vllm(argv: list[str]) -> None:
    a = vllm_parser().parse_args(argv)
    rank = a.node_rank
    record("vllm", argv, rank, {})
    die_timer(rank)
    if a.distributed_executor_backend == "ray":
        if a.nnodes != 1 or a.headless:
            fail("with --distributed-executor-backend ray, vLLM is started once, on the head, without --nnodes")
        ray_wait(a.tensor_parallel_size * a.pipeline_parallel_size)
        serve_http(a.port, a.served_model_name or a.model, ("/health",))
        block()
    if a.nnodes > 1:
        if a.master_addr is None or a.master_port is None:
            fail("--nnodes > 1 needs --master-addr and --master-port")
        if a.headless != (rank > 0):
            fail(f"rank {rank}: --headless is for ranks >= 1 only" if a.headless
                 else f"rank {rank}: ranks >= 1 must run --headless")
    if not os.environ.get("VLLM_HOST_IP"):
        fail("VLLM_HOST_IP is not set")
    me = {"rank": rank, "nnodes": a.nnodes, "master": f"{a.master_addr}:{a.master_port}", "model": a.model,
          "tp": a.tensor_parallel_size, "pp": a.pipeline_parallel_size, "node": os.environ.get("SLURMD_NODENAME"),
          "host_ip": os.environ.get("VLLM_HOST_IP"),
          "problem": rank_problem(rank) or world_problem(a.tensor_parallel_size, a.pipeline_parallel_size, a.nnodes)}
    if rank == 0 and me["problem"]:
        fail(f"rank 0: {me['problem']}")
    rendezvous(me, a.nnodes, rank, a.master_addr or LOOPBACK, a.master_port or 0)
    if rank == 0:
        serve_http(a.port, a.served_model_name or a.model, ("/health",))
    block()


def run_sglang(argv: list[str]) -> None:
    a = sglang_parser().parse_args(argv)
    rank = a.node_rank
    record("sglang", argv, rank, {})
    die_timer(rank)
    master_host, master_port = LOOPBACK, 0
    if a.nnodes > 1:
        if not a.dist_init_addr or ":" not in a.dist_init_addr:
            fail("--nnodes > 1 needs --dist-init-addr HOST:PORT")
        master_host, _, port_text = a.dist_init_addr.rpartition(":")
        master_port = int(port_text)
    me = {"rank": rank, "nnodes": a.nnodes, "master": a.dist_init_addr, "model": a.model_path, "tp": a.tp,
          "pp": a.pp, "node": os.environ.get("SLURMD_NODENAME"), "host_ip": os.environ.get("VLLM_HOST_IP"),
          "problem": rank_problem(rank) or world_problem(a.tp, a.pp, a.nnodes)}
    if rank == 0 and me["problem"]:
        fail(f"rank 0: {me['problem']}")
    rendezvous(me, a.nnodes, rank, master_host, master_port)
    if rank == 0:
        serve_http(a.port, a.served_model_name or a.model_path, ("/health_generate", "/health"))
    block()


# --------------------------------------------------------------------------- ray
def run_ray(argv: list[str]) -> None:
    a = ray_parser().parse_args(argv)
    rank = int(os.environ.get("NODE_RANK", os.environ.get("SLURM_PROCID", "0")))
    record("ray", argv, rank, {})
    die_timer(rank)
    if not a.block:
        fail("ray start without --block would return at once (and the task with it)")
    if a.head:
        ray_head(a.node_ip_address, a.port)
    if not a.address:
        fail("ray start: give --head or --address")
    host, _, port = a.address.rpartition(":")
    sock = connect(host, int(port))
    send(sock, {"op": "join", "gpus": gpus(), "node": os.environ.get("SLURMD_NODENAME")})
    f = sock.makefile("r")
    say(f"joined the Ray head at {a.address}")
    while f.readline():
        pass
    fail("lost the Ray head", 3)


def ray_head(ip: Optional[str], port: int) -> None:
    nodes = {os.environ.get("SLURMD_NODENAME") or "head": gpus()}
    lock = threading.Lock()
    srv = socket.create_server((local(ip), port))
    say(f"Ray head on {local(ip)}:{port}")

    def client(conn: socket.socket) -> None:
        f = conn.makefile("r")
        msg = recv(f)
        if msg is None:
            return
        if msg.get("op") == "status":
            with lock:
                send(conn, {"nodes": len(nodes), "gpus": sum(nodes.values())})
            conn.close()
            return
        name = str(msg.get("node"))
        with lock:
            nodes[name] = int(msg.get("gpus") or 0)
        say(f"Ray: node {name} joined with {msg.get('gpus')} GPUs ({len(nodes)} nodes)")
        while f.readline():
            pass
        with lock:
            nodes.pop(name, None)
        say(f"Ray: node {name} left")

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=client, args=(conn,), daemon=True).start()


def ray_wait(need: int) -> None:
    addr = os.environ.get("RAY_ADDRESS")
    if not addr:
        fail("--distributed-executor-backend ray: no Ray cluster (RAY_ADDRESS is not set)")
    host, _, port = addr.rpartition(":")
    deadline = time.monotonic() + JOIN_TIMEOUT
    while True:
        sock = connect(host, int(port))
        send(sock, {"op": "status"})
        st = recv(sock.makefile("r")) or {}
        sock.close()
        if int(st.get("gpus", 0)) >= need:
            say(f"Ray cluster ready: {st.get('nodes')} nodes, {st.get('gpus')} GPUs for tp x pp = {need}")
            return
        if time.monotonic() > deadline:
            fail(f"the Ray cluster has {st.get('gpus')} GPUs, {need} needed", 3)
        time.sleep(0.2)


def main(argv: list[str]) -> None:
    if argv[:1] == ["serve"]:
        run_vllm(argv[1:])
    elif argv[:1] == ["start"]:
        run_ray(argv[1:])
    elif "--model-path" in argv or any(x.startswith("--model-path=") for x in argv):
        run_sglang(argv)
    else:
        fail("usage: fake_engine.py serve MODEL … | --model-path MODEL … | start --head|--address …")


if __name__ == "__main__":
    main(sys.argv[1:])
