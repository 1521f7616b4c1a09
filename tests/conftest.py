"""Shared fixtures: the bundled digits and tiny models trained once per test session.

The tiny models train for a few epochs on the real bundled digits (small MLPs, so
the whole suite stays fast on 2 CPU cores). Tests that need a trained model take
`tiny_run` (a run directory) or `tiny_model` (the loaded VAE); conditional tests take
`tiny_conditional_run` / `tiny_conditional_model`, hierarchical ones
`tiny_hierarchical_run`; `exported` / `exported_conditional`
are their exports (shared by the export and the browser explorer tests).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vae_tf import RunConfig, TrainConfig, VAEConfig, load, load_splits, train  # noqa: E402
from vae_tf.data import eval_images  # noqa: E402

# The plain ELBO without warm-up, whatever the library default.
TINY_MODEL = VAEConfig(
    architecture="mlp", hidden_units=(128,), latent_dim=8, activation="relu", prior="normal", iwae_samples=1,
    kl_warmup_steps=0,
)
TINY_TRAIN = TrainConfig(epochs=4, batch_size=128, learning_rate=3e-3, lr_schedule="constant", steps_per_execution=8)


@pytest.fixture(scope="session")
def bundled_splits():
    """The bundled digits: 4,500 train / 500 held-out, float32 [N, 28, 28, 1] in [0, 1]."""
    return load_splits("bundled")


@pytest.fixture(scope="session")
def heldout_binary(bundled_splits):
    """The 500 held-out digits, statically binarized (as evaluation sees them), and labels."""
    return eval_images(bundled_splits.test_images, "dynamic"), bundled_splits.test_labels


def _train_tiny(tmp_path_factory, name: str, **model_changes) -> str:
    run_dir = str(tmp_path_factory.mktemp(name) / "run")
    train(RunConfig(model=TINY_MODEL.replace(**model_changes), train=TINY_TRAIN), run_dir, verbose=0)
    return run_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> str:
    """Run directory of a tiny MLP VAE (latent 8) trained 4 epochs on the bundled digits."""
    return _train_tiny(tmp_path_factory, "tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_run):
    return load(tiny_run)


@pytest.fixture(scope="session")
def tiny_conditional_run(tmp_path_factory) -> str:
    """Run directory of the tiny VAE conditioned on the digit label, with the default
    prior (for a conditional model: one learned mixture of Gaussians per class)."""
    return _train_tiny(tmp_path_factory, "tiny_conditional", conditional=True, prior="mog")


@pytest.fixture(scope="session")
def tiny_conditional_model(tiny_conditional_run):
    return load(tiny_conditional_run)


@pytest.fixture(scope="session")
def tiny_hierarchical_run(tmp_path_factory) -> str:
    """Run directory of the tiny VAE with two stochastic layers (8 at the bottom, 4 at
    the top) and the default mixture prior over the top layer."""
    return _train_tiny(tmp_path_factory, "tiny_hierarchical", latent_layers=(8, 4), prior="mog")


@pytest.fixture(scope="session")
def exported(tiny_run, tmp_path_factory):
    """(export directory, manifest) of `tiny_run`, exported once per session."""
    from vae_tf.export import export_run

    out = str(tmp_path_factory.mktemp("export") / "tiny_vae")
    return out, export_run(tiny_run, out)


@pytest.fixture(scope="session")
def exported_conditional(tiny_conditional_run, tmp_path_factory):
    """(export directory, manifest) of `tiny_conditional_run`, exported once per session."""
    from vae_tf.export import export_run

    out = str(tmp_path_factory.mktemp("export_cond") / "tiny_cvae")
    return out, export_run(tiny_conditional_run, out)


@pytest.fixture(scope="session")
def assert_same_model():
    """A check that two VAEs hold identical weights and give identical outputs
    (reconstruct, decode, sample) on images x: `assert_same_model(trained, loaded, x)`."""
    import tensorflow as tf

    def check(trained, loaded, x):
        assert loaded.config == trained.config and len(loaded.weights) == len(trained.weights)
        for a, b in zip(trained.weights, loaded.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
        z = tf.random.stateless_normal([5, trained.config.latent_dim], seed=[1, 2])
        np.testing.assert_array_equal(loaded.reconstruct(x).numpy(), trained.reconstruct(x).numpy())
        np.testing.assert_array_equal(loaded.decode(z).mean().numpy(), trained.decode(z).mean().numpy())
        np.testing.assert_array_equal(loaded.sample(4, seed=3).numpy(), trained.sample(4, seed=3).numpy())

    return check


@pytest.fixture
def rng():
    return np.random.default_rng(0)
