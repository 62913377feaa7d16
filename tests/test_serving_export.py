"""A trained model outside cyxwiz: safetensors export with the model definition in its
metadata, and loading either format in plain Python gives the same predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open
from serving_fixtures import digits_split, quick_model

from central.cli.model_export import ArtifactError, to_safetensors
from node.serving.offline import load


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return quick_model(tmp_path_factory.mktemp("export") / "digits.cyx", epochs=2)


def test_safetensors_holds_the_parameters_and_the_definition(artifact, tmp_path):
    out = tmp_path / "model.safetensors"
    out.write_bytes(to_safetensors(artifact.read_bytes()))
    with safe_open(str(out), framework="numpy") as f:
        meta = f.metadata()
        assert sorted(f.keys()) == ["dense_0.b", "dense_0.w", "out.b", "out.w"]
        assert f.get_tensor("dense_0.w").shape == (64, 32)
    assert json.loads(meta["model_definition"])["hidden"] == [32]
    assert json.loads(meta["sample_shape"]) == [64] and json.loads(meta["output_dim"]) == 10
    _, _, x, _ = digits_split()
    x = x.reshape(len(x), -1)
    model_a, params_a = load(artifact)
    model_b, params_b = load(out)
    np.testing.assert_allclose(np.asarray(model_a.apply(params_a, x)), np.asarray(model_b.apply(params_b, x)), rtol=1e-6)


def test_what_is_not_a_model_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="bad magic bytes"):
        to_safetensors(b"hello world, not a model")
    junk = tmp_path / "x.safetensors"
    from safetensors.numpy import save_file

    save_file({"a": np.zeros(2, np.float32)}, str(junk))
    with pytest.raises(ValueError, match="not a cyxwiz model"):
        load(junk)
