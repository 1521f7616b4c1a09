"""The fused Adam/AdamW (`vae_tf.optimizers`) against tf_keras' own: the same steps,
the same slots, one kernel per dense variable."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from vae_tf import TrainConfig
from vae_tf.optimizers import FusedAdam, FusedAdamW
from vae_tf.training import make_optimizer


def _run(optimizer, steps=25, sparse=False):
    """`steps` updates of a dense matrix, a bias and (sparse) an embedding table on a
    fixed least-squares problem; returns the variables and the optimizer's slots."""
    rng = np.random.default_rng(0)
    w = tf.Variable(rng.normal(size=(6, 4)).astype("float32"), name="w")
    b = tf.Variable(np.zeros(4, "float32"), name="b")
    table = tf.Variable(rng.normal(size=(10, 4)).astype("float32"), name="table")
    x = tf.constant(rng.normal(size=(32, 6)).astype("float32"))
    y = tf.constant(rng.normal(size=(32, 4)).astype("float32"))
    ids = tf.constant([1, 3, 3, 7])
    variables = [w, b, table]

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(x @ w + b - y))
            if sparse:
                loss += tf.reduce_mean(tf.square(tf.gather(table, ids) - 1.0))
            else:
                loss += tf.reduce_mean(tf.square(table - 1.0))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    for _ in range(steps):
        step()
    slots = [v.numpy() for v in optimizer.variables]
    return [v.numpy() for v in variables], slots, step


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize(
    "fused, reference",
    [
        (lambda: FusedAdam(0.05), lambda: keras.optimizers.Adam(0.05)),
        (
            lambda: FusedAdam(keras.optimizers.schedules.CosineDecay(0.05, 25, alpha=0.01), beta_1=0.8, epsilon=1e-3),
            lambda: keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(0.05, 25, alpha=0.01), beta_1=0.8,
                                          epsilon=1e-3),
        ),
        (lambda: FusedAdamW(0.05, weight_decay=0.1), lambda: keras.optimizers.AdamW(0.05, weight_decay=0.1)),
    ],
    ids=["adam", "adam-cosine-options", "adamw"],
)
def test_fused_optimizer_takes_the_same_steps_as_tf_keras(fused, reference, sparse):
    # One step of 0.05 agrees to 1e-6 (float32 rounding of 1 - 0.999^t: the kernel
    # orders its arithmetic differently); over 25 steps that grows to ~1e-5.
    for steps, atol in ((1, 1e-6), (25, 2e-5)):
        got_vars, got_slots, _ = _run(fused(), steps=steps, sparse=sparse)
        want_vars, want_slots, _ = _run(reference(), steps=steps, sparse=sparse)
        assert len(got_slots) == len(want_slots)
        for got, want in zip(got_vars + got_slots, want_vars + want_slots):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=atol)
    # The variables moved: the comparison is not between two untouched copies.
    assert np.abs(got_vars[0] - np.random.default_rng(0).normal(size=(6, 4))).max() > 0.1


def test_dense_updates_are_one_fused_kernel_per_variable():
    _, _, step = _run(FusedAdam(0.05), steps=1)
    ops = [op.type for op in step.get_concrete_function().graph.get_operations()]
    assert ops.count("ResourceApplyAdam") == 3
    assert "Sqrt" not in ops  # tf_keras' elementwise update has one per variable


def test_amsgrad_keeps_tf_keras_update():
    got, _, _ = _run(FusedAdam(0.05, amsgrad=True))
    want, _, _ = _run(keras.optimizers.Adam(0.05, amsgrad=True))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=2e-5)


def test_make_optimizer_is_fused_and_checkpoints_load_into_tf_keras_adam(tmp_path):
    assert type(make_optimizer(TrainConfig(), 10)) is FusedAdam
    assert type(make_optimizer(TrainConfig(weight_decay=1e-4), 10)) is FusedAdamW
    fused = FusedAdam(0.05)
    _run(fused)
    path = tf.train.Checkpoint(optimizer=fused).save(str(tmp_path / "ckpt"))
    plain = keras.optimizers.Adam(0.05)
    plain.build([tf.Variable(np.zeros((6, 4), "float32")), tf.Variable(np.zeros(4, "float32")),
                 tf.Variable(np.zeros((10, 4), "float32"))])
    tf.train.Checkpoint(optimizer=plain).restore(path).assert_existing_objects_matched()
    for a, b in zip(fused.variables, plain.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
