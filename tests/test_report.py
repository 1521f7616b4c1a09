"""`vae-tf report RUN_DIR` writes every picture and an index.html that shows them."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from PIL import Image

from vae_tf import RunConfig, train
from vae_tf.cli import main
from vae_tf.report import PICTURES, REPORT_DIR, write_report
from tests.conftest import TINY_MODEL, TINY_TRAIN


@pytest.fixture(scope="module")
def latent2_run(tmp_path_factory):
    """A tiny VAE with a 2-D latent (for the true latent manifold), one epoch."""
    run_dir = str(tmp_path_factory.mktemp("latent2") / "run")
    train(RunConfig(model=TINY_MODEL.replace(latent_dim=2), train=TINY_TRAIN.replace(epochs=1)), run_dir, verbose=0)
    return run_dir


def _check_report(run_dir: str, index: str, num_samples: int) -> dict:
    assert index == os.path.join(run_dir, "index.html")
    with open(index) as f:
        page = f.read()
    for name in PICTURES:
        path = os.path.join(run_dir, REPORT_DIR, name)
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert min(image.size) > 150, (name, image.size)
            # Not a blank canvas: the picture has dark and light pixels.
            lo, hi = image.convert("L").getextrema()
            assert lo < 80 and hi > 200, (name, lo, hi)
        assert f'src="{REPORT_DIR}/{name}"' in page
    with open(os.path.join(run_dir, REPORT_DIR, "report.json")) as f:
        numbers = json.load(f)
    assert numbers["iwae_samples"] == num_samples
    assert numbers["iwae_nll"] <= numbers["neg_elbo"] + 1.0
    for source in ("uniform_noise", "inverted"):
        assert numbers["ood"][source]["auroc"] > 0.99
        assert f"{numbers['ood'][source]['auroc']:.3f}" in page
    return numbers


@pytest.mark.parametrize("which", ["tiny_run", "tiny_conditional_run"])
def test_report_writes_every_picture(which, request, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(request.getfixturevalue(which), run_dir)
    index = write_report(run_dir, num_samples=5, max_images=60, progress=False)
    _check_report(run_dir, index, 5)
    with open(index) as f:
        page = f.read()
    assert "not the full manifold" in page  # latent 8: a labelled 2-D slice
    if which == "tiny_conditional_run":
        assert "row i was generated with label i" in page


def test_cli_report_on_a_2d_latent_run(latent2_run, capsys):
    assert main(["report", latent2_run, "--iwae-samples", "3"]) == 0
    assert "index.html" in capsys.readouterr().out
    index = os.path.join(latent2_run, "index.html")
    numbers = _check_report(latent2_run, index, 3)
    assert numbers["num_images"] == 500
    with open(index) as f:
        page = f.read()
    assert "grid of the 2-D latent space" in page
