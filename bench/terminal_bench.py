"""Terminal speed (issue 12) on loopback while a training job runs on the same node:
keystroke echo p50/p99, CreateSession, and 1 MB of output through the stream; each
against the same thing on a local PTY without the network in the same run (a ratio).

    python bench/terminal_bench.py                 # cyxwiz up's stack, a real training job
    python bench/terminal_bench.py --keys 200      # quicker look

Targets: echo p99 <= 20 ms on 2 cores; CreateSession <= 100 ms; 1 MB in <= 1 s.
The path measured is the one `cyxwiz shell` takes: a grant from central, then the
node's TerminalService; the shell is bash (readline echoes each key).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import pty
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402

from central.cli.stack import Stack, StackConfig  # noqa: E402
from central.client import Client  # noqa: E402
from protos import deployment_pb2 as d  # noqa: E402
from protos import deployment_pb2_grpc as dg  # noqa: E402
from protos.convert import bearer_metadata  # noqa: E402

DATASET = "synthetic://classification?n=60000&features=64&classes=10&seed=0"
MODEL = {"type": "mlp", "hidden": [512, 512]}
BIG = "head -c 750000 /dev/zero | base64; echo END-$((40+2))\n"
SHELL = "/bin/bash"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def ms(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(1000 * statistics.median(values), 2), "p99_ms": round(1000 * pct(values, 0.99), 2),
            "max_ms": round(1000 * max(values), 2), "n": len(values)}


# --- the reference: the same shell on a local PTY, no network ----------------------------

class LocalPty:
    def __init__(self) -> None:
        self.master, slave = pty.openpty()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TERM": "xterm-256color", "HOME": tempfile.gettempdir()}
        self.proc = subprocess.Popen([SHELL], stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True, close_fds=True)
        os.close(slave)
        self.buffer = bytearray()

    def read_until(self, marker: bytes, timeout: float = 30.0) -> None:
        import select
        deadline = time.monotonic() + timeout
        while marker not in self.buffer:
            ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(marker)
            self.buffer += os.read(self.master, 65536)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self.master)


def local_reference(keys: int, interval: float) -> dict:
    started = time.perf_counter()
    term = LocalPty()
    os.write(term.master, b"PS1='rea''dy> '\n")  # its echo does not match the prompt
    term.read_until(b"ready> ")
    spawn_s = time.perf_counter() - started
    echo = []
    for i in range(keys):
        time.sleep(interval)
        term.buffer.clear()
        t = time.perf_counter()
        os.write(term.master, b"a")
        term.read_until(b"a")
        echo.append(time.perf_counter() - t)
        if i % 50 == 49:
            os.write(term.master, b"\x15")
            time.sleep(0.05)
    os.write(term.master, b"\x15")
    time.sleep(0.05)
    term.buffer.clear()
    t = time.perf_counter()
    os.write(term.master, BIG.encode())
    term.read_until(b"END-42")
    big_s = time.perf_counter() - t
    term.close()
    return {"echo": echo, "big_s": big_s, "spawn_s": spawn_s}


# --- through central and the node ---------------------------------------------------------

class Remote:
    def __init__(self, stub, session_id: str, metadata) -> None:
        self.keys: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.buffer = bytearray()
        self.changed = asyncio.Event()
        self.call = stub.StreamTerminal(self._requests(session_id), metadata=metadata)
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _requests(self, session_id: str):
        yield d.TerminalData(session_id=session_id)
        while (data := await self.keys.get()) is not None:
            yield d.TerminalData(session_id=session_id, data=data)

    async def _read(self) -> None:
        async for message in self.call:
            self.buffer += message.data
            self.changed.set()

    async def read_until(self, marker: bytes, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.buffer:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(0.001, deadline - time.monotonic()))


async def through_node(central: str, keys: int, creates: int, interval: float) -> dict:
    async with grpc.aio.insecure_channel(central) as channel:
        central_stub = dg.TerminalServiceStub(channel)
        grants = []
        for _ in range(creates + 1):
            t = time.perf_counter()
            answer = await central_stub.CreateSession(d.CreateTerminalSessionRequest(user_id="bench"))
            grants.append(time.perf_counter() - t)
    metadata = bearer_metadata(answer.grant)
    async with grpc.aio.insecure_channel(answer.terminal_endpoint) as channel:
        stub = dg.TerminalServiceStub(channel)
        create = []
        for _ in range(creates):
            t = time.perf_counter()
            created = await stub.CreateSession(d.CreateTerminalSessionRequest(user_id="bench", rows=40, cols=120),
                                               metadata=metadata)
            create.append(time.perf_counter() - t)
            await stub.CloseSession(d.CloseTerminalSessionRequest(session_id=created.session.session_id),
                                    metadata=metadata)
        created = await stub.CreateSession(d.CreateTerminalSessionRequest(user_id="bench", rows=40, cols=120),
                                           metadata=metadata)
        term = Remote(stub, created.session.session_id, metadata)
        term.keys.put_nowait(b"PS1='rea''dy> '\n")  # its echo does not match the prompt
        await term.read_until(b"ready> ")
        echo = []
        for i in range(keys):
            await asyncio.sleep(interval)
            term.buffer.clear()
            t = time.perf_counter()
            term.keys.put_nowait(b"a")
            await term.read_until(b"a")
            echo.append(time.perf_counter() - t)
            if i % 50 == 49:
                term.keys.put_nowait(b"\x15")
                await asyncio.sleep(0.05)
        term.keys.put_nowait(b"\x15")
        await asyncio.sleep(0.05)
        term.buffer.clear()
        t = time.perf_counter()
        term.keys.put_nowait(BIG.encode())
        await term.read_until(b"END-42")
        big_s = time.perf_counter() - t
        big_bytes = len(term.buffer)
        await stub.CloseSession(d.CloseTerminalSessionRequest(session_id=created.session.session_id), metadata=metadata)
    return {"echo": echo, "create": create, "grant": grants[1:], "big_s": big_s, "big_bytes": big_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=500)
    parser.add_argument("--creates", type=int, default=30)
    parser.add_argument("--key-interval", type=float, default=0.05,
                        help="seconds between keystrokes (a fast typist: 20 keys/s)")
    parser.add_argument("--no-training", action="store_true", help="measure without the training job")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        config = StackConfig(home=Path(home), grpc_port=0, rest_port=0, nodes=1, node_port=0, deploy_port=0,
                             terminal_port=0, fresh_nats=True, terminal=True,
                             extra_env={"CYXWIZ_TERMINAL_SHELL": SHELL, "CYXWIZ_API_KEY": ""})
        with Stack(config) as stack, Client(stack.grpc, timeout=30) as client:
            job_id = None
            if not args.no_training:
                job_id = client.submit(dataset_uri=DATASET, model=MODEL, epochs=100_000, batch_size=256,
                                       hyperparameters={"optimizer": "adam", "seed": "0"})
                while client.status(job_id).epoch < 1:
                    time.sleep(0.2)
                before = client.status(job_id).epoch
            remote = asyncio.run(through_node(stack.grpc, args.keys, args.creates, args.key_interval))
            local = local_reference(args.keys, args.key_interval)
            training = None
            if job_id is not None:
                after = client.status(job_id)
                training = {"state": after.state, "epochs_during_measurement": after.epoch - before}
                client.cancel(job_id, "benchmark done")
    report = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or platform.platform()}",
        "training_job": training,
        "load_average_1min": round(os.getloadavg()[0], 1),
        "key_interval_s": args.key_interval,
        "keystroke_echo": {**ms(remote["echo"]), "target": "p99 <= 20 ms"},
        "keystroke_echo_local_pty": ms(local["echo"]),
        "echo_p50_ratio": round(statistics.median(remote["echo"]) / statistics.median(local["echo"]), 1),
        "create_session_node": {**ms(remote["create"]), "target": "<= 100 ms"},
        "create_session_central_grant": ms(remote["grant"]),
        "local_pty_spawn_to_prompt_ms": round(1000 * local["spawn_s"], 1),
        "output_1MB_s": round(remote["big_s"], 3),
        "output_1MB_bytes": remote["big_bytes"],
        "output_1MB_local_pty_s": round(local["big_s"], 3),
        "output_ratio": round(remote["big_s"] / local["big_s"], 2),
        "output_target": "<= 1 s",
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
