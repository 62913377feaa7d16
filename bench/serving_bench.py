"""Serving speed against honest references, in one run: ``python bench/serving_bench.py``.

References: the same jitted predict called in-process (the limit), and a plain aiohttp
handler wrapping it (what a user would write by hand). The server (node.serving: gRPC
and HTTP) and the plain handler run in a child process; the clients run here.

Measures (issue 11):
1. CreateDeployment -> RUNNING for the digits MLP, compilation included;
2. /v1/predict over HTTP at concurrency 1: p50/p99 against in-process and plain aiohttp;
3. OIP ModelInfer over gRPC at concurrency 64: requests/s, client included;
4. batching on against off at concurrency 64: throughput and p95;
5. ``--model mlp4096``: a 4096-4096 MLP at batch 256, served against in-process (GPU):
   one client process (several connection layouts), grpc's no-op floor, and
   ``--client-processes`` client processes at once (what the server takes when no one
   client's GIL is the limit); with ``--serving-processes K ...`` also against a node
   with K serving processes on its port (node.serving.processes), server CPU summed
   over all of them;
6. ``--model wide``: the same 4 MiB requests to a model too small to matter (4096 inputs,
   8 hidden units), so the transport dominates; with the same bytes sent to a no-op
   grpc.aio method of the same server (``floor``: grpc's own cost of a 4 MiB request),
   and CPU and page faults per request on each side.

Prints one JSON document (and writes it to ``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # the in-process limit and the servers share a GPU
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


# --- the model ---------------------------------------------------------------------------------


def make_model(kind: str, path: Path) -> tuple[np.ndarray, int]:
    """Write a model artifact; return sample inputs and the batch size to use
    (``digits``, ``mlp4096`` or ``wide``)."""
    import jax

    from node import checkpoint
    from node.datasets import load_dataset
    from node.models import build_model
    from node.trainer import TrainConfig, Trainer

    if kind == "digits":
        d = load_dataset("builtin://digits", data_roots=[])
        from node.datasets import Dataset

        data = Dataset("builtin://digits", d.x.reshape(len(d.x), -1), d.y, "classification", 10)
        cfg = TrainConfig.from_job({"learning_rate": "0.003", "seed": "0"}, epochs=3, batch_size=64,
                                   model_definition=json.dumps({"type": "mlp", "hidden": [128]}))
        path.write_bytes(Trainer(cfg, data).run().model_bytes)
        return data.x[:256], 1
    hidden = [8] if kind == "wide" else [4096, 4096]
    definition = {"type": "mlp", "hidden": hidden, "activation": "relu", "dropout": 0.0}
    model = build_model(definition, sample_shape=(4096,), output_dim=10)
    params = model.init(jax.random.PRNGKey(0))
    meta = {"kind": "model", "model_definition": model.definition, "sample_shape": [4096], "output_dim": 10,
            "task": "classification", "class_names": [], "epochs": 0}
    path.write_bytes(checkpoint.to_bytes(params, meta))
    return np.random.default_rng(0).standard_normal((256, 4096), dtype=np.float32), 256


def in_process(path: Path, x: np.ndarray, batch: int, n: int) -> dict:
    """The same compiled predict (weights on the device), called directly on host arrays."""
    from node.serving import source
    from node.serving.runner import Predictor

    loaded = source.load(path.read_bytes(), source.ModelSource("m", "file://" + str(path), None))
    predictor = Predictor(loaded, max_batch=max(batch, 64))
    predictor.compile_rest()
    xs = x[:batch]
    for _ in range(50):
        predictor(xs)
    times = []
    started = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        predictor(xs)
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - started
    return {**_percentiles(times), "samples_per_s": n * batch / total, "device": str(predictor.device)}


def _percentiles(times: list[float]) -> dict:
    ms = np.asarray(times) * 1000.0
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "n": len(times)}


# --- the server (child process) ---------------------------------------------------------------------


async def serve(models: Path, port_file: Path, processes: int = 0) -> None:
    import grpc
    from aiohttp import web

    from node.serving import Serving, source
    from node.serving.runner import Predictor
    from prometheus_client import CollectorRegistry

    from protos.call_metrics import CallCounter, grpc_handled_counter
    from protos.decode_guard import DecodeGuard

    async def fetch(uri: str) -> bytes:
        raise RuntimeError("bench serves local files only")

    serving = Serving(fetch=fetch, model_roots=(models,), api_key=None, processes=processes)
    # as node/main.py builds its deploy server: the call counter and the decode guard, 64 MiB messages
    server = grpc.aio.server(interceptors=[CallCounter(grpc_handled_counter(CollectorRegistry())), DecodeGuard()],
                             options=[("grpc.max_receive_message_length", 64 << 20),
                                      ("grpc.max_send_message_length", 64 << 20), ("grpc.so_reuseport", 1)])
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    serving.add_to(server)
    serving.add_processes_to(server)

    async def floor(request: bytes, context) -> bytes:  # grpc's own cost: the bytes, no parsing, no model
        return b""

    from node.serving.oip_grpc import OipServicer
    from protos import open_inference_pb2 as oip

    # the served path as it was before node.serving.oip_wire: protobuf parses the whole request
    protobuf_parse = grpc.unary_unary_rpc_method_handler(
        OipServicer(serving.deployments, serving.access).ModelInfer,
        request_deserializer=oip.ModelInferRequest.FromString, response_serializer=oip.ModelInferResponse.SerializeToString)
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler("bench.Floor", {"Take": grpc.unary_unary_rpc_method_handler(floor)}),
        grpc.method_handlers_generic_handler("bench.ProtobufParse", {"ModelInfer": protobuf_parse}),
    ))
    await server.start()
    await serving.start_processes("127.0.0.1", grpc_port)
    http_port = await serving.start_http("127.0.0.1", 0)

    path = models / "digits.cyx"
    predictor = None
    if path.exists():
        loaded = source.load(path.read_bytes(), source.ModelSource("m", "file://" + str(path), None))
        predictor = Predictor(loaded, max_batch=1)

    async def plain(request: web.Request) -> web.Response:  # what a user writes by hand
        body = await request.json()
        x = np.asarray(body["input"], np.float32).reshape(1, -1)
        out = predictor(x)
        return web.json_response({"output": out.ravel().tolist(), "shape": list(out.shape)})

    app = web.Application()
    app.router.add_post("/predict", plain)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    plain_port = site._server.sockets[0].getsockname()[1]
    pids = [os.getpid(), *(serving.processes.pids() if serving.processes is not None else [])]
    port_file.write_text(json.dumps({"grpc": grpc_port, "http": http_port, "plain": plain_port, "pid": os.getpid(),
                                     "pids": pids}))
    await asyncio.Event().wait()


# --- clients ----------------------------------------------------------------------------------------


def http_latency(port: int, path: str, body: bytes, n: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "application/json"}
    times = []
    for i in range(n + 100):
        t = time.perf_counter()
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status
        if i >= 100:
            times.append(time.perf_counter() - t)
    conn.close()
    return _percentiles(times)


async def create_to_running(grpc_port: int, deployment_id: str, runtime: dict[str, str], file: str = "digits.cyx") -> float:
    """Seconds from CreateDeployment to RUNNING; then waits (not timed) until the node has
    compiled every batch size in the background, so no measurement shares the CPU with XLA."""
    import grpc

    from node.serving.runner import batch_sizes
    from protos import deployment_pb2 as dp
    from protos import deployment_pb2_grpc as dpg

    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = dpg.DeploymentServiceStub(channel)
        started = time.perf_counter()
        await stub.CreateDeployment(dp.CreateDeploymentRequest(config=dp.DeploymentConfig(
            deployment_id=deployment_id, model=dp.ModelInfo(local_path=file), runtime_params=runtime)))
        took = None
        while True:
            got = (await stub.GetDeployment(dp.GetDeploymentRequest(deployment_id=deployment_id))).deployment
            if got.status == dp.DEPLOYMENT_STATUS_RUNNING:
                took = took or time.perf_counter() - started
                want = ",".join(map(str, batch_sizes(int(got.config.runtime_params["max_batch_size"]))))
                if got.config.model.metadata.get("compiled_batch_sizes") == want:
                    return took
            else:
                assert got.status == dp.DEPLOYMENT_STATUS_LOADING, got.status_message
            await asyncio.sleep(0.002 if took is None else 0.05)


MESSAGE_LIMITS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
# HTTP/2 settings tried for 4 MiB requests: a larger stream look-ahead (flow-control window) and frames
LARGE_WINDOWS = [("grpc.http2.lookahead_bytes", 16 << 20), ("grpc.http2.max_frame_size", (1 << 24) - 1)]


def _cpu_seconds(pid: int | list[int]) -> float:
    """User + system CPU seconds of process ``pid`` (or the sum over a list; Linux /proc)."""
    if isinstance(pid, list):
        return sum(_cpu_seconds(p) for p in pid)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _faults(pid: int | list[int]) -> int:
    """Minor page faults of process ``pid`` so far (a fresh 4 MiB buffer costs 1,024)."""
    if isinstance(pid, list):
        return sum(_faults(p) for p in pid)
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def _infer_request(model: str, x: np.ndarray):
    from protos import open_inference_pb2 as oip

    tensor = oip.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=x.shape)
    return oip.ModelInferRequest(model_name=model, inputs=[tensor], raw_input_contents=[x.astype("<f4").tobytes()])


async def oip_load(grpc_port: int, model: str, x: np.ndarray, concurrency: int, seconds: float, *,
                   server_pid: int = 0, client: str = "aio", channels: int = 1, options: list = (),
                   via: str = "oip") -> dict:
    """``concurrency`` callers each sending ModelInfer back to back for ``seconds``, over
    ``channels`` connections (callers share them round robin). ``client``: ``aio`` (one
    grpc.aio coroutine per caller) or ``futures`` (the sync stub's ``.future()`` calls, as
    tritonclient's ``async_infer`` makes them: C-core threads, a callback per answer).
    Also the CPU each side spent per request (steadier than throughput on a busy machine).
    ``via``: ``oip`` (the service), ``protobuf`` (the same servicer with protobuf parsing
    the whole request, as before ``oip_wire``) or ``floor`` (the request's bytes to a no-op
    method: grpc's own cost)."""
    request = _infer_request(model, x)
    options = [*MESSAGE_LIMITS, *options]
    before = (time.process_time(), _cpu_seconds(server_pid) if server_pid else 0.0,
              _faults(server_pid) if server_pid else 0)
    if client == "futures":
        times, elapsed = await asyncio.to_thread(_futures_load, grpc_port, request, concurrency, seconds, channels, options)
    else:
        times, elapsed = await _aio_load(grpc_port, request, concurrency, seconds, channels, options, via)
    n = max(1, len(times))
    cpu = {"client_cpu_us_per_request": (time.process_time() - before[0]) / n * 1e6}
    if server_pid:
        cpu["server_cpu_us_per_request"] = (_cpu_seconds(server_pid) - before[1]) / n * 1e6
        cpu["server_faults_per_request"] = (_faults(server_pid) - before[2]) / n
    return {**_percentiles(times), "rps": len(times) / elapsed, "samples_per_s": len(times) * len(x) / elapsed,
            "client": client, "channels": channels, **cpu}


async def _aio_load(port: int, request, concurrency: int, seconds: float, channels: int, options: list,
                    via: str = "oip"):
    import grpc

    from protos import open_inference_pb2_grpc as oipg

    opened = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(channels)]
    try:
        stubs = [oipg.GRPCInferenceServiceStub(c) if via == "oip" else _BenchStub(c, via) for c in opened]
        for stub in stubs:  # warm each connection up
            for _ in range(3):
                await stub.ModelInfer(request)
        times: list[float] = []
        stop = time.perf_counter() + seconds

        async def caller(stub):
            while time.perf_counter() < stop:
                t = time.perf_counter()
                await stub.ModelInfer(request)
                times.append(time.perf_counter() - t)

        started = time.perf_counter()
        await asyncio.gather(*(caller(stubs[i % channels]) for i in range(concurrency)))
        return times, time.perf_counter() - started
    finally:
        for c in opened:
            await c.close()


def _load_process(port: int, model: str, x: np.ndarray, concurrency: int, seconds: float, channels: int, via: str,
                  start_at: float, results) -> None:
    """One client process of a ``--client-processes`` figure: waits for the common start."""
    async def go():
        request = _infer_request(model, x)
        options = list(MESSAGE_LIMITS)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        return await _aio_load(port, request, concurrency, seconds, channels, options, via)

    times, elapsed = asyncio.run(go())
    results.put((times, elapsed))


async def oip_load_processes(grpc_port: int, model: str, x: np.ndarray, processes: int, per_process: int,
                             seconds: float, *, server_pid: int | list[int], via: str = "oip") -> dict:
    """``processes`` client processes, each ``per_process`` grpc.aio callers on a connection
    each, all sending for the same ``seconds`` of wall clock: the server's capacity where
    one client process (one GIL serializing 4 MiB requests) would be the limit. Real
    deployments have many clients; the figure says what the node takes, not one client."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    start_at = time.time() + 5.0  # every process started and connected by then
    workers = [ctx.Process(target=_load_process, args=(grpc_port, model, x, per_process, seconds, per_process, via,
                                                       start_at, results)) for _ in range(processes)]
    for w in workers:
        w.start()
    await asyncio.sleep(max(0.0, start_at - time.time()))
    cpu0, faults0 = _cpu_seconds(server_pid), _faults(server_pid)
    got = [await asyncio.to_thread(results.get, True, seconds + 120) for _ in workers]
    cpu1, faults1 = _cpu_seconds(server_pid), _faults(server_pid)
    for w in workers:
        w.join(30)
    times = [t for ts, _ in got for t in ts]
    elapsed = max(e for _, e in got)
    n = max(1, len(times))
    return {**_percentiles(times), "rps": len(times) / elapsed, "samples_per_s": len(times) * len(x) / elapsed,
            "client": f"{processes} processes x {per_process} aio callers", "channels": processes * per_process,
            "server_cpu_us_per_request": (cpu1 - cpu0) / n * 1e6, "server_faults_per_request": (faults1 - faults0) / n}


class _BenchStub:
    """The bench server's extra methods, called as a stub's ModelInfer."""

    def __init__(self, channel, via: str) -> None:
        from protos import open_inference_pb2 as oip

        if via == "floor":
            self.ModelInfer = channel.unary_unary("/bench.Floor/Take", request_serializer=oip.ModelInferRequest.SerializeToString)
        else:
            self.ModelInfer = channel.unary_unary("/bench.ProtobufParse/ModelInfer",
                                                  request_serializer=oip.ModelInferRequest.SerializeToString,
                                                  response_deserializer=oip.ModelInferResponse.FromString)


def _futures_load(port: int, request, concurrency: int, seconds: float, channels: int, options: list):
    import threading

    import grpc

    from protos import open_inference_pb2_grpc as oipg

    opened = [grpc.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(channels)]
    try:
        stubs = [oipg.GRPCInferenceServiceStub(c) for c in opened]
        for stub in stubs:  # warm each connection up
            for _ in range(3):
                stub.ModelInfer(request)
        times: list[float] = []
        failures: list[BaseException] = []
        lock = threading.Lock()
        done = threading.Event()
        live = [concurrency]
        stop = time.perf_counter() + seconds

        def launch(stub) -> None:
            started = time.perf_counter()
            stub.ModelInfer.future(request).add_done_callback(lambda f: finished(stub, f, started))

        def finished(stub, future, started: float) -> None:
            now = time.perf_counter()
            if future.exception() is not None:
                failures.append(future.exception())
            times.append(now - started)
            if now < stop and not failures:
                launch(stub)
                return
            with lock:
                live[0] -= 1
                if live[0] == 0:
                    done.set()

        began = time.perf_counter()
        for i in range(concurrency):
            launch(stubs[i % channels])
        assert done.wait(seconds + 120), "the callers did not finish"
        if failures:
            raise failures[0]
        return times, time.perf_counter() - began
    finally:
        for c in opened:
            c.close()


# --- the run ----------------------------------------------------------------------------------------


def run(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    models = tmp / "models"
    models.mkdir()
    big_x, big_batch = make_model("mlp4096", models / "mlp4096.cyx")
    x, batch = make_model("digits", models / "digits.cyx") if args.model == "digits" else (big_x, big_batch)
    if args.model == "wide":
        make_model("wide", models / "wide.cyx")
    report: dict = {"model": args.model, "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()}
    if args.model == "digits":
        report["in_process"] = in_process(models / "digits.cyx", x, batch, 2000)
        report["in_process_mlp4096_b1"] = in_process(models / "mlp4096.cyx", big_x, 1, 50)
    else:
        x, batch = big_x, big_batch
        report["in_process"] = in_process(models / f"{args.model}.cyx", x, batch, 300)
    for processes in ([0] if args.model != "mlp4096" else args.serving_processes):
        ports, child = _start_server(models, tmp / f"ports-{processes}.json", processes)
        try:
            if args.model == "digits":
                report.update(asyncio.run(_digits(ports, x, args)))
            elif args.model == "wide":
                report.update(asyncio.run(_transport(ports, x, batch, args)))
            elif processes == 0:
                report.update(asyncio.run(_large(ports, x, batch, args)))
            else:
                report.update(asyncio.run(_large_processes(ports, x, batch, args, processes)))
        finally:
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    report["load_avg_end"] = os.getloadavg()
    return report


def _start_server(models: Path, port_file: Path, processes: int):
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(models), str(port_file), str(processes)],
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                 p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)})
    deadline = time.monotonic() + 300
    while not port_file.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            raise SystemExit("the bench server did not start")
        time.sleep(0.05)
    return json.loads(port_file.read_text()), child


async def _digits(ports: dict, x: np.ndarray, args) -> dict:
    out: dict = {}
    out["create_to_running_s"] = [await create_to_running(ports["grpc"], f"dep-{i}", {}) for i in range(3)]
    await create_to_running(ports["grpc"], "dep-off", {"batching": "off"})
    one = x[0].tolist()
    n = args.requests
    body = json.dumps({"deployment_id": "dep-0", "input": one}).encode()
    out["v1_predict_c1"] = await asyncio.to_thread(http_latency, ports["http"], "/v1/predict", body, n)
    plain = json.dumps({"input": one}).encode()
    out["plain_aiohttp_c1"] = await asyncio.to_thread(http_latency, ports["plain"], "/predict", plain, n)
    sample, pid = x[:1], ports["pid"]
    for client in ("aio", "futures"):
        out[f"oip_grpc_c64_batching_on_{client}"] = await oip_load(ports["grpc"], "dep-1", sample, 64, args.seconds,
                                                                    server_pid=pid, client=client)
        out[f"oip_grpc_c64_batching_off_{client}"] = await oip_load(ports["grpc"], "dep-off", sample, 64, args.seconds,
                                                                     server_pid=pid, client=client)
    out["oip_grpc_c1"] = await oip_load(ports["grpc"], "dep-2", sample, 1, args.seconds / 2, server_pid=pid)
    # batching where the model's compute, not the transport, bounds throughput: the 4096-4096 MLP on CPU
    await create_to_running(ports["grpc"], "big-on", {"max_batch_size": "64"}, "mlp4096.cyx")
    await create_to_running(ports["grpc"], "big-off", {"max_batch_size": "64", "batching": "off"}, "mlp4096.cyx")
    out["mlp4096_c64_batching_on"] = await oip_load(ports["grpc"], "big-on", sample_big(), 64, args.seconds,
                                                    server_pid=pid, client="futures")
    out["mlp4096_c64_batching_off"] = await oip_load(ports["grpc"], "big-off", sample_big(), 64, args.seconds,
                                                     server_pid=pid, client="futures")
    return out


def sample_big() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((1, 4096), dtype=np.float32)


async def _large(ports: dict, x: np.ndarray, batch: int, args) -> dict:
    out: dict = {"create_to_running_s": await create_to_running(ports["grpc"], "dep-big", {"max_batch_size": str(batch)},
                                                                 "mlp4096.cyx")}
    pid = ports["pid"]
    for concurrency in (1, 4, 8):  # one connection
        out[f"oip_grpc_b{batch}_c{concurrency}"] = await oip_load(ports["grpc"], "dep-big", x, concurrency, args.seconds,
                                                                  server_pid=pid)
    for concurrency in (4, 8, 16):  # a connection per caller (HTTP/2 streams of one connection share its window)
        out[f"oip_grpc_b{batch}_c{concurrency}_channels"] = await oip_load(
            ports["grpc"], "dep-big", x, concurrency, args.seconds, server_pid=pid, channels=concurrency)
    out[f"oip_grpc_b{batch}_c8_channels_large_windows"] = await oip_load(
        ports["grpc"], "dep-big", x, 8, args.seconds, server_pid=pid, channels=8, options=LARGE_WINDOWS)
    for concurrency in (1, 8):  # grpc's own limit: the same bytes to a no-op method (no parsing, no model)
        out[f"floor_b{batch}_c{concurrency}"] = await oip_load(ports["grpc"], "dep-big", x, concurrency, args.seconds,
                                                               server_pid=pid, via="floor")
    for processes in args.client_processes:  # many clients: what the server takes when no one client is the limit
        out[f"oip_grpc_b{batch}_procs{processes}x4"] = await oip_load_processes(
            ports["grpc"], "dep-big", x, processes, 4, args.seconds, server_pid=pid)
        out[f"floor_b{batch}_procs{processes}x4"] = await oip_load_processes(
            ports["grpc"], "dep-big", x, processes, 4, args.seconds, server_pid=pid, via="floor")
    return out


async def _large_processes(ports: dict, x: np.ndarray, batch: int, args, processes: int) -> dict:
    """The same deployment on a node with ``processes`` serving processes: many client
    processes (one would be the limit itself), connections spread over all of them."""
    out: dict = {f"create_to_running_s_sp{processes}": await create_to_running(
        ports["grpc"], "dep-big", {"max_batch_size": str(batch)}, "mlp4096.cyx")}
    for clients in args.client_processes:
        out[f"oip_grpc_b{batch}_procs{clients}x4_sp{processes}"] = await oip_load_processes(
            ports["grpc"], "dep-big", x, clients, 4, args.seconds, server_pid=ports["pids"])
    return out


async def _transport(ports: dict, x: np.ndarray, batch: int, args) -> dict:
    """4 MiB requests where the model costs little: the served path against grpc's floor."""
    out: dict = {"create_to_running_s": await create_to_running(ports["grpc"], "dep-wide", {"max_batch_size": str(batch)},
                                                                 "wide.cyx")}
    pid = ports["pid"]
    for round_ in range(args.rounds):  # alternated, so a busy machine's swings fall on both alike
        for concurrency in (1, 4):
            for via in ("floor", "oip", "protobuf"):
                got = await oip_load(ports["grpc"], "dep-wide", x, concurrency, args.seconds, server_pid=pid, via=via)
                out.setdefault(f"{via}_b{batch}_c{concurrency}", []).append(got)
    return out


def summarize(r: dict) -> dict:
    s: dict = {}
    ip = r["in_process"]
    if r["model"] == "digits":
        v1, plain = r["v1_predict_c1"], r["plain_aiohttp_c1"]
        best = max(("aio", "futures"), key=lambda c: r[f"oip_grpc_c64_batching_on_{c}"]["rps"])
        on, off = r[f"oip_grpc_c64_batching_on_{best}"], r[f"oip_grpc_c64_batching_off_{best}"]
        s = {
            "oip_grpc_c64_client": best,
            "oip_grpc_c64_rps_aio_client": r["oip_grpc_c64_batching_on_aio"]["rps"],
            "oip_grpc_c64_server_cpu_us_per_request": on["server_cpu_us_per_request"],
            "oip_grpc_c64_client_cpu_us_per_request": on["client_cpu_us_per_request"],
            "v1_p50_over_in_process_ms": v1["p50_ms"] - ip["p50_ms"], "v1_p99_over_in_process_ms": v1["p99_ms"] - ip["p99_ms"],
            "plain_aiohttp_p50_over_in_process_ms": plain["p50_ms"] - ip["p50_ms"],
            "plain_aiohttp_p99_over_in_process_ms": plain["p99_ms"] - ip["p99_ms"],
            "oip_grpc_c64_rps": on["rps"], "batching_throughput_ratio": on["rps"] / off["rps"],
            "batching_p95_on_ms": on["p95_ms"], "batching_p95_off_ms": off["p95_ms"],
            "create_to_running_max_s": max(r["create_to_running_s"]),
        }
        big_on, big_off = r["mlp4096_c64_batching_on"], r["mlp4096_c64_batching_off"]
        s.update(mlp4096_batching_throughput_ratio=big_on["rps"] / big_off["rps"],
                 mlp4096_batching_p95_on_ms=big_on["p95_ms"], mlp4096_batching_p95_off_ms=big_off["p95_ms"])
    elif r["model"] == "wide":
        def median(key: str, field: str) -> float:
            return float(np.median([run[field] for run in r[key]]))

        for key in [k for k in r if k.startswith(("floor_", "oip_", "protobuf_"))]:
            for field in ("server_cpu_us_per_request", "client_cpu_us_per_request", "server_faults_per_request",
                          "samples_per_s", "p50_ms"):
                s[f"{key}_{field}"] = median(key, field)
        s["in_process_samples_per_s"] = ip["samples_per_s"]
    else:
        name, best = max(((k, v) for k, v in r.items() if k.startswith("oip_grpc_")), key=lambda kv: kv[1]["samples_per_s"])
        floor = max((v["samples_per_s"] for k, v in r.items() if k.startswith("floor_")), default=float("nan"))
        s = {"served_over_in_process": best["samples_per_s"] / ip["samples_per_s"], "best": name,
             "served_samples_per_s": best["samples_per_s"], "in_process_samples_per_s": ip["samples_per_s"],
             "floor_samples_per_s": floor, "served_over_floor": best["samples_per_s"] / floor,
             "server_cpu_us_per_request": best["server_cpu_us_per_request"]}
        for k, v in r.items():
            if k.startswith("oip_grpc_") and "_sp" in k:
                s[f"{k}_over_in_process"] = v["samples_per_s"] / ip["samples_per_s"]
        one_client = [(k, v) for k, v in r.items() if k.startswith("oip_grpc_") and "_procs" not in k]
        if one_client and len(one_client) < len([k for k in r if k.startswith("oip_grpc_")]):
            name1, best1 = max(one_client, key=lambda kv: kv[1]["samples_per_s"])
            s.update(one_client_process_best=name1, one_client_process_over_in_process=best1["samples_per_s"] / ip["samples_per_s"])
    return s


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        from bus.loop import run as run_loop

        run_loop(serve(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["digits", "mlp4096", "wide"], default="digits")
    p.add_argument("--rounds", type=int, default=3, help="--model wide: rounds of the alternated figures")
    p.add_argument("--requests", type=int, default=3000, help="requests for each concurrency-1 latency figure")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds of each throughput figure")
    p.add_argument("--client-processes", type=int, nargs="*", default=[2, 4],
                   help="--model mlp4096: also measure with this many client processes (4 callers each)")
    p.add_argument("--serving-processes", type=int, nargs="*", default=[0],
                   help="--model mlp4096: also serve from a node with this many serving processes (0 = the node alone)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    report = run(args)
    report["summary"] = summarize(report)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
