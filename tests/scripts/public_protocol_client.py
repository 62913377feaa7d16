"""A plain client written from the PUBLIC CyxWiz protocol files alone (not ours).

Usage: public_protocol_client.py CENTRAL N_JOBS EPOCHS TIMEOUT_S
Generates stubs from tests/fixtures/cyxwiz_protocol into a temp folder, submits N_JOBS
training jobs at once, waits until each ends, lists them, and prints a JSON summary:
{"job_ids": [...], "final": {job_id: status name}, "listed": n}.
"""

import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_tools import protoc

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "cyxwiz_protocol"


def generate_stubs() -> Path:
    out = Path(tempfile.mkdtemp(prefix="public-stubs-"))
    files = [str(FIXTURES / name) for name in ("common.proto", "job.proto", "node.proto")]
    code = protoc.main(["protoc", f"-I{FIXTURES}", f"--python_out={out}", f"--grpc_python_out={out}", *files])
    if code != 0:
        sys.exit(f"protoc failed on the public protocol files ({code})")
    return out


def main() -> None:
    central, n_jobs, epochs, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    sys.path.insert(0, str(generate_stubs()))
    import common_pb2  # noqa: E402  (generated above)
    import job_pb2
    import job_pb2_grpc

    channel = grpc.insecure_channel(central)
    jobs = job_pb2_grpc.JobServiceStub(channel)
    model = json.dumps({"type": "mlp", "hidden": [16]})

    def submit(i: int) -> str:
        config = job_pb2.JobConfig(
            job_type=job_pb2.JOB_TYPE_TRAINING,
            priority=job_pb2.PRIORITY_NORMAL,
            model_definition=model,
            hyperparameters={"learning_rate": "0.01", "seed": str(i)},
            dataset_uri="synthetic://classification?n=512&features=16&classes=4&seed=1",
            batch_size=64,
            epochs=epochs,
        )
        response = jobs.SubmitJob(job_pb2.SubmitJobRequest(config=config), timeout=30)
        if not response.job_id:
            raise SystemExit(f"submit {i} refused: {response.error.code} {response.error.message}")
        return response.job_id

    with ThreadPoolExecutor(16) as pool:
        job_ids = list(pool.map(submit, range(n_jobs)))

    terminal = {common_pb2.STATUS_COMPLETED, common_pb2.STATUS_FAILED, common_pb2.STATUS_CANCELLED}
    final: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while len(final) < len(job_ids) and time.monotonic() < deadline:
        for job_id in job_ids:
            if job_id in final:
                continue
            status = jobs.GetJobStatus(job_pb2.GetJobStatusRequest(job_id=job_id), timeout=10).status
            if status.status in terminal:
                final[job_id] = common_pb2.StatusCode.Name(status.status)
        if len(final) < len(job_ids):
            time.sleep(0.25)
    listed = jobs.ListJobs(job_pb2.ListJobsRequest(page_size=1000), timeout=10)
    print(json.dumps({"job_ids": job_ids, "final": final, "listed": len(listed.jobs)}))


if __name__ == "__main__":
    main()
