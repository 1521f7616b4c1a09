"""The exported SavedModel runs under TensorFlow 2.20, the TensorFlow of the newest TF
Serving release (older than the 2.21 we train with): an op newer than the server would
fail there with "Op type not registered".

A separate virtualenv with tensorflow-cpu==2.20.* (created once, ~1 minute, reused from
$VAE_TF_TF220_VENV or ~/.cache/vae-tf/tf220-venv) runs export/check_serving.py, which
loads the SavedModel in a TF1 session with tag `serve` and runs every SignatureDef by
its tensor names, as TF Serving does; the outputs must equal the Python model's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vae_tf.export import export_run, pipeline
from vae_tf.export import check_serving

VENV = os.environ.get("VAE_TF_TF220_VENV", os.path.expanduser("~/.cache/vae-tf/tf220-venv"))


def _tf220_python() -> str:
    python = os.path.join(VENV, "bin", "python")
    if not os.path.exists(python):
        building = VENV + f".building-{os.getpid()}"
        try:
            subprocess.run([sys.executable, "-m", "venv", building], check=True)
            subprocess.run(
                [os.path.join(building, "bin", "python"), "-m", "pip", "install", "-q", "tensorflow-cpu==2.20.*"],
                check=True, timeout=900,
            )
        except (subprocess.SubprocessError, OSError) as err:
            pytest.skip(f"cannot create a virtualenv with tensorflow-cpu==2.20.* ({err}); the TF 2.20 check did not run")
        os.makedirs(os.path.dirname(VENV), exist_ok=True)
        os.replace(building, VENV)
    return python


@pytest.mark.parametrize("fixture", ["tiny_run", "tiny_conditional_run"])
def test_savedmodel_runs_every_signature_under_tf220(fixture, request, tmp_path):
    run_dir = request.getfixturevalue(fixture)
    model = request.getfixturevalue(fixture.replace("_run", "_model"))
    out = str(tmp_path / "vae")
    export_run(run_dir, out)
    c = model.config
    z, label = pipeline.reference_batch(c.latent_dim, c.conditional, c.num_classes, size=6)
    inputs, expected = pipeline._serving_inputs(model, z, label)
    np.savez(tmp_path / "inputs.npz", **inputs)
    script = check_serving.__file__
    result = subprocess.run(
        [_tf220_python(), script, os.path.join(out, "serving", "1"), str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz")],
        capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["tensorflow"].startswith("2.20.")
    assert summary["signatures"] == ["decode", "encode", "reconstruct", "sample", "serving_default"]
    with np.load(tmp_path / "out.npz") as outputs:
        assert set(outputs.files) == set(expected)
        for key, want in expected.items():
            np.testing.assert_allclose(outputs[key], want, atol=1e-5, err_msg=key)
