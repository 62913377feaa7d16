"""A node and a client written from the PUBLIC CyxWiz protocol files alone (not ours).

Usage: public_protocol_node.py CENTRAL
It registers as a node (serving AssignJob on a port of its own), heartbeats, submits a
job, receives the AssignJob call for it, reports two epochs and the completion, then
reads the job's status and the job list. Prints a JSON summary on its last line.
"""

import asyncio
import json
import sys
import tempfile
from pathlib import Path

import grpc
from grpc_tools import protoc

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "cyxwiz_protocol"


def generate_stubs() -> Path:
    out = Path(tempfile.mkdtemp(prefix="public-stubs-"))
    files = [str(FIXTURES / name) for name in ("common.proto", "job.proto", "node.proto")]
    if protoc.main(["protoc", f"-I{FIXTURES}", f"--python_out={out}", f"--grpc_python_out={out}", *files]) != 0:
        sys.exit("protoc failed on the public protocol files")
    return out


sys.path.insert(0, str(generate_stubs()))
import common_pb2  # noqa: E402  (generated above)
import job_pb2  # noqa: E402
import job_pb2_grpc  # noqa: E402
import node_pb2  # noqa: E402
import node_pb2_grpc  # noqa: E402


class PublicNode(node_pb2_grpc.NodeServiceServicer):
    def __init__(self) -> None:
        self.assigned: asyncio.Queue = asyncio.Queue()

    async def AssignJob(self, request, context):
        await self.assigned.put(request)
        return node_pb2.AssignJobResponse(status=common_pb2.STATUS_SUCCESS, job_id=request.job.job_id, accepted=True)


async def main(central: str) -> dict:
    node = PublicNode()
    server = grpc.aio.server()
    node_pb2_grpc.add_NodeServiceServicer_to_server(node, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(central)
    nodes = node_pb2_grpc.NodeServiceStub(channel)
    jobs = job_pb2_grpc.JobServiceStub(channel)

    info = node_pb2.NodeInfo(name="public-node", cpu_cores=4, ram_total=8 << 30, ip_address="127.0.0.1", port=port,
                             devices=[common_pb2.DeviceCapabilities(device_type=common_pb2.DEVICE_CPU, device_name="cpu",
                                                                    memory_total=8 << 30)])
    registered = await nodes.RegisterNode(node_pb2.RegisterNodeRequest(info=info), timeout=10)
    auth = (("authorization", f"Bearer {registered.session_token}"),) if registered.session_token else ()
    node_id = registered.node_id
    beat = await nodes.Heartbeat(node_pb2.HeartbeatRequest(node_id=node_id), timeout=10, metadata=auth)

    config = job_pb2.JobConfig(job_type=job_pb2.JOB_TYPE_TRAINING, priority=job_pb2.PRIORITY_HIGH, epochs=2,
                               batch_size=32, dataset_uri="builtin://digits",
                               model_definition=json.dumps({"type": "mlp", "hidden": [16]}))
    submitted = await jobs.SubmitJob(job_pb2.SubmitJobRequest(config=config), timeout=10)
    assignment = await asyncio.wait_for(node.assigned.get(), 30)

    job_id = assignment.job.job_id
    for epoch in (1, 2):
        status = job_pb2.JobStatus(job_id=job_id, status=common_pb2.STATUS_IN_PROGRESS, current_epoch=epoch,
                                   progress=epoch / 2)
        answer = await nodes.ReportProgress(
            node_pb2.ReportProgressRequest(node_id=node_id, job_id=job_id, status=status,
                                           current_metrics={"loss": 1.0 / epoch, "accuracy": 0.5 + epoch / 10}),
            timeout=10, metadata=auth)
        assert answer.continue_job, answer
    result = job_pb2.JobResult(job_id=job_id, status=common_pb2.STATUS_COMPLETED, model_weights_uri="ipfs://model",
                               model_weights_hash="ab" * 32, model_size=123, final_metrics={"loss": 0.5},
                               total_compute_time=3)
    await nodes.ReportCompletion(node_pb2.ReportCompletionRequest(node_id=node_id, job_id=job_id, result=result),
                                 timeout=10, metadata=auth)
    final = (await jobs.GetJobStatus(job_pb2.GetJobStatusRequest(job_id=job_id), timeout=10)).status
    listed = await jobs.ListJobs(job_pb2.ListJobsRequest(page_size=100), timeout=10)
    await channel.close()
    await server.stop(None)
    return {
        "registered": common_pb2.StatusCode.Name(registered.status), "node_id": node_id,
        "keep_alive": beat.keep_alive, "submitted": submitted.job_id, "assigned": job_id,
        "assigned_to": assignment.node_id, "final": common_pb2.StatusCode.Name(final.status),
        "final_epoch": final.current_epoch, "listed": [j.job_id for j in listed.jobs],
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1]))))
