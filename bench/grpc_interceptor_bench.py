"""What central's gRPC interceptors cost per call: server CPU per call with and without them.

    python bench/grpc_interceptor_bench.py [--calls 20000] [--rounds 3]

A grpc.aio server in a process of its own (central's ``JobService.GetJobStatus`` shape:
a trivial async servicer, so the interceptors are most of what differs) answers
``--calls`` unary calls from 64 concurrent callers in this process; the server's own CPU
time (psutil) per call is measured with central's chain before this change
(``DecodeGuard``) and after it (``CallCounter``, the open ``ReplayGate``, ``DecodeGuard``),
alternating, ``--rounds`` times each. First, the same chains driven directly in this
process (no network, as grpc.aio hands each interceptor its continuation), whose CPU
per call is what our interceptors add, with little noise from a loaded machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import psutil  # noqa: E402

from protos import job_pb2, job_pb2_grpc  # noqa: E402


def serve(chain: str, port_out, stop) -> None:
    from prometheus_client import CollectorRegistry

    from central.adapters.readiness import ReplayGate
    from protos.call_metrics import CallCounter, grpc_handled_counter
    from protos.decode_guard import DecodeGuard

    class Jobs(job_pb2_grpc.JobServiceServicer):
        async def GetJobStatus(self, request, context):
            return job_pb2.GetJobStatusResponse(status=job_pb2.JobStatus(job_id=request.job_id))

    async def main() -> None:
        interceptors = [DecodeGuard()]
        if chain == "after":
            gate = ReplayGate()
            gate.open()
            interceptors = [CallCounter(grpc_handled_counter(CollectorRegistry())), gate, DecodeGuard()]
        server = grpc.aio.server(interceptors=interceptors)
        job_pb2_grpc.add_JobServiceServicer_to_server(Jobs(), server)
        port_out.put(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await server.stop(0)

    asyncio.run(main())


async def load(port: int, calls: int, concurrency: int = 64) -> float:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = job_pb2_grpc.JobServiceStub(channel)
        left = iter(range(calls))

        async def caller() -> None:
            for i in left:
                await stub.GetJobStatus(job_pb2.GetJobStatusRequest(job_id=f"j{i}"))

        await stub.GetJobStatus(job_pb2.GetJobStatusRequest(job_id="warm"))
        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return time.perf_counter() - started


def one_round(chain: str, calls: int) -> dict:
    ctx = mp.get_context("spawn")
    port_out, stop = ctx.Queue(), ctx.Event()
    process = ctx.Process(target=serve, args=(chain, port_out, stop))
    process.start()
    try:
        port = port_out.get(timeout=60)
        server = psutil.Process(process.pid)
        asyncio.run(load(port, 200))  # warm: the servicer's and interceptors' first calls
        before = server.cpu_times()
        seconds = asyncio.run(load(port, calls))
        after = server.cpu_times()
    finally:
        stop.set()
        process.join(10)
    cpu = (after.user - before.user) + (after.system - before.system)
    return {"chain": chain, "calls_per_s": round(calls / seconds), "server_cpu_us_per_call": round(cpu / calls * 1e6, 1)}


class _Context:
    """What the interceptors ask of a call's context, for the direct measure."""

    def code(self):
        return None


def chains():
    from prometheus_client import CollectorRegistry

    from central.adapters.readiness import ReplayGate
    from protos.call_metrics import CallCounter, grpc_handled_counter
    from protos.decode_guard import DecodeGuard

    gate = ReplayGate()
    gate.open()
    return {"before": [DecodeGuard()],
            "after": [CallCounter(grpc_handled_counter(CollectorRegistry())), gate, DecodeGuard()]}


async def direct(interceptors: list, calls: int) -> float:
    """Seconds of this process's CPU per call through ``interceptors`` and the method, as
    grpc.aio runs them (each interceptor is handed a continuation to the next), no network."""
    import functools

    async def GetJobStatus(request, context):
        return job_pb2.GetJobStatusResponse()

    method = grpc.unary_unary_rpc_method_handler(
        GetJobStatus, request_deserializer=job_pb2.GetJobStatusRequest.FromString,
        response_serializer=job_pb2.GetJobStatusResponse.SerializeToString)

    async def continuation(index: int, details):
        if index == len(interceptors):
            return method
        return await interceptors[index].intercept_service(functools.partial(continuation, index + 1), details)

    class Details:
        method = "/cyxwiz.protocol.JobService/GetJobStatus"
        invocation_metadata = ()

    request, context = job_pb2.GetJobStatusRequest(job_id="j"), _Context()
    started = time.process_time()
    for _ in range(calls):
        handler = await continuation(0, Details)
        await handler.unary_unary(request, context)
    return (time.process_time() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    measured = {"before": [], "after": []}
    for _ in range(args.rounds * 3):
        for chain, interceptors in chains().items():
            measured[chain].append(asyncio.run(direct(interceptors, args.calls * 5)) * 1e6)
    added = statistics.median(measured["after"]) - statistics.median(measured["before"])
    print(json.dumps({"direct_cpu_us_per_call": {k: round(statistics.median(v), 2) for k, v in measured.items()},
                      "added_us_per_call": round(added, 2)}), flush=True)
    results = {"before": [], "after": []}
    for _ in range(args.rounds):
        for chain in ("before", "after"):
            result = one_round(chain, args.calls)
            results[chain].append(result)
            print(json.dumps(result), flush=True)
    cpu = {chain: statistics.median(r["server_cpu_us_per_call"] for r in rs) for chain, rs in results.items()}
    rate = {chain: statistics.median(r["calls_per_s"] for r in rs) for chain, rs in results.items()}
    print(json.dumps({"median_server_cpu_us_per_call": cpu, "after_over_before_cpu": round(cpu["after"] / cpu["before"], 3),
                      "median_calls_per_s": rate, "after_over_before_rate": round(rate["after"] / rate["before"], 3)}))


if __name__ == "__main__":
    main()
