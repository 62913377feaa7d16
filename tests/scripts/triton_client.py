"""Predict with tritonclient, unchanged, against a node: ``triton_client.py HTTP GRPC MODEL X.npy OUT.json [KEY]``.

Runs in its own process: tritonclient's protobuf package ``inference`` and ours cannot
share one process's descriptor pool. Writes the argmax of every sample, per protocol.
"""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient


def main() -> None:
    http_url, grpc_url, model, x_path, out_path, *key = sys.argv[1:]
    headers = {"authorization": f"Bearer {key[0]}"} if key else None
    x = np.load(x_path).astype(np.float32)
    result = {}
    http = httpclient.InferenceServerClient(http_url)
    assert http.is_server_live() and http.is_model_ready(model)
    meta = http.get_model_metadata(model)
    result["http_metadata"] = meta
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)  # binary by default
    out = http.infer(model, [inp], headers=headers, request_id="r-1")
    result["http_binary"] = out.as_numpy("output").argmax(1).tolist()
    result["http_id"] = out.get_response()["id"]
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    out = http.infer(model, [inp], outputs=[httpclient.InferRequestedOutput("output", binary_data=False)], headers=headers)
    result["http_json"] = out.as_numpy("output").argmax(1).tolist()
    grpc = grpcclient.InferenceServerClient(grpc_url)
    assert grpc.is_server_live() and grpc.is_model_ready(model)
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    out = grpc.infer(model, [inp], headers=headers, request_id="g-1")
    result["grpc"] = out.as_numpy("output").argmax(1).tolist()
    result["grpc_metadata"] = grpc.get_model_metadata(model, as_json=True)
    try:
        grpc.infer(model, [grpcclient.InferInput("nope", [1, 3], "FP32").set_data_from_numpy(np.zeros((1, 3), np.float32))],
                   headers=headers)
    except Exception as exc:  # InferenceServerException
        result["grpc_error"] = [exc.status(), exc.message()]
    with open(out_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
