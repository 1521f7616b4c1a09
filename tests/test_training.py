"""`vae_tf.train` and `vae_tf.load`: the run directory, save -> load, resuming rules,
strategy selection, and training under MirroredStrategy over two logical CPUs against
one device."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from vae_tf import RunConfig, TrainConfig, TrainingError, VAEConfig, load, train
from vae_tf.data import Datasets, eval_images, make_pipeline
from vae_tf.model import VAE
from vae_tf import callbacks, training
from vae_tf.training import WEIGHTS_PREFIX, choose_strategy

SMALL_MODEL = VAEConfig(
    architecture="mlp", hidden_units=(64,), latent_dim=4, activation="relu", iwae_samples=1, kl_warmup_steps=0,
)
SMALL_TRAIN = TrainConfig(
    epochs=2, batch_size=64, learning_rate=3e-3, lr_schedule="constant", steps_per_execution=4,
    preprocessing="static",
)


def small_datasets(splits, n_train: int = 2048, n_eval: int = 200, batch_size: int = 64) -> Datasets:
    """Pipelines over the first `n_train` bundled training digits (statically
    binarized, shuffled with seed 0) and `n_eval` validation digits."""
    sub = dataclasses.replace(
        splits, train=splits.train.select(np.arange(n_train)),
        validation=splits.validation.select(np.arange(n_eval)), test=splits.test.select(np.arange(n_eval)),
    )
    train_ds = make_pipeline(sub.train_images, sub.train_labels, batch_size=batch_size, preprocessing="static",
                             shuffle=True, seed=0, drop_remainder=True)
    val_ds = make_pipeline(eval_images(sub.validation_images, "static"), sub.validation_labels,
                           batch_size=batch_size, preprocessing="continuous")
    return Datasets(train=train_ds, validation=val_ds, test=val_ds, splits=sub, preprocessing="static",
                    batch_size=batch_size, steps_per_epoch=n_train // batch_size)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, bundled_splits):
    """A 2-epoch run (32 steps per epoch) of a small MLP VAE: the TrainResult."""
    run_dir = str(tmp_path_factory.mktemp("small") / "run")
    return train(RunConfig(model=SMALL_MODEL, train=SMALL_TRAIN), run_dir, verbose=0,
                 datasets=small_datasets(bundled_splits))


# === Run directory ===


def test_run_directory_contents(small_run):
    run_dir = small_run.run_dir
    stored = RunConfig.load(os.path.join(run_dir, "config.json"))
    assert stored == RunConfig(model=SMALL_MODEL, train=SMALL_TRAIN)
    assert os.path.exists(os.path.join(run_dir, WEIGHTS_PREFIX + ".index"))
    assert os.path.exists(os.path.join(run_dir, "checkpoints", "last.index"))
    assert not os.path.exists(os.path.join(run_dir, "backup"))  # removed once the run finished
    assert not [n for n in os.listdir(run_dir) if ".tmp" in n or n.startswith(".weights-tmp")]

    summary = json.load(open(os.path.join(run_dir, "history.json")))
    assert summary["images_per_second"] > 0
    assert summary["images_per_epoch"] == 32 * 64
    assert summary["replicas"] == 1
    assert summary["split_sizes"] == {"train": 2048, "validation": 200, "test": 200}
    history = summary["history"]
    for key in ("loss", "reconstruction", "kl", "elbo", "val_loss", "val_reconstruction", "val_kl", "val_elbo",
                "epoch_seconds", "step_seconds"):
        assert len(history[key]) == 2, key
    # Throughput counts the training steps only: the validation pass comes after them.
    assert all(0 < s < e for s, e in zip(history["step_seconds"], history["epoch_seconds"]))
    assert summary["images_per_second"] == pytest.approx(2048 / history["step_seconds"][1])
    # Whole-epoch throughput: epoch wall time, validation and checkpoint included.
    assert summary["epoch_images_per_second"] == pytest.approx(2048 / history["epoch_seconds"][1])
    assert summary["epoch_images_per_second"] < summary["images_per_second"]
    first = summary["first_epoch"]
    assert first["seconds"] == pytest.approx(history["epoch_seconds"][0])
    # The first epoch ended after train() was called, which was after the process started.
    assert 0 < first["seconds"] < first["since_train_call"] < first["since_process_start"]
    assert first["end_time"] == pytest.approx(first["since_process_start"] + training.process_start_time(), abs=0.05)
    # The default cadence: the last epoch always writes the checkpoint (and epoch 0,
    # if it ended 30 s or more after training started).
    assert summary["checkpoints"]["every"] == "every 30 s" and summary["checkpoints"]["written"] in (1, 2)
    assert small_run.history == summary

    with open(os.path.join(run_dir, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    np.testing.assert_allclose([float(r["val_elbo"]) for r in rows], history["val_elbo"])

    events = [os.path.join(root, n) for root, _, names in os.walk(os.path.join(run_dir, "logs"))
              for n in names if n.startswith("events.out.tfevents")]
    assert any(os.sep + "train" + os.sep in e for e in events), events
    assert any(os.sep + "validation" + os.sep in e for e in events), events
    # TensorBoard scalars per epoch, under Keras' tags: epoch_<metric> in train/ and
    # the val_ metrics in validation/ (without the prefix).
    scalars = {}
    for path in events:
        part = os.path.basename(os.path.dirname(path))
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                scalars.setdefault((part, value.tag), []).append((event.step, float(tf.make_ndarray(value.tensor))))
    assert [v for _, v in scalars[("train", "epoch_loss")]] == pytest.approx(history["loss"])
    assert [v for _, v in scalars[("validation", "epoch_elbo")]] == pytest.approx(history["val_elbo"])
    assert [step for step, _ in scalars[("validation", "epoch_elbo")]] == [0, 1]
    assert [v for _, v in scalars[("train", "epoch_learning_rate")]] == pytest.approx([3e-3, 3e-3])


def test_validation_pass_equals_keras_evaluate(small_run, bundled_splits):
    """`callbacks.Validation` runs `model.test_step` over batches held in memory; its
    figures after the last epoch are those of `model.evaluate` on the validation
    pipeline with the final weights (the same batches, step and noise)."""
    model = small_run.model
    assert not model.jit_compile  # the CPU default; XLA would draw other noise
    evaluated = model.evaluate(small_run.datasets.validation, verbose=0, return_dict=True)
    last = {k[len("val_"):]: v[-1] for k, v in small_run.history["history"].items() if k.startswith("val_")}
    assert set(last) == {"loss", "reconstruction", "kl", "elbo"}
    for name, value in last.items():
        assert value == pytest.approx(evaluated[name], rel=1e-6), name


def test_large_validation_split_goes_through_keras(monkeypatch, tmp_path, bundled_splits):
    """A validation split above `VALIDATION_MEMORY_BYTES` is not held in memory:
    Keras' own validation pass runs instead, with the same figures."""
    config = RunConfig(model=SMALL_MODEL, train=SMALL_TRAIN.replace(epochs=1))
    passes = []
    in_memory = callbacks.Validation.on_epoch_end
    monkeypatch.setattr(callbacks.Validation, "on_epoch_end",
                        lambda self, epoch, logs=None: (passes.append(epoch), in_memory(self, epoch, logs))[1])
    runs = {}
    for name, limit in (("memory", callbacks.VALIDATION_MEMORY_BYTES), ("keras", 0)):
        monkeypatch.setattr(callbacks, "VALIDATION_MEMORY_BYTES", limit)
        passes.clear()
        tf.random.set_seed(0)  # the global seed enters the pipeline's shuffle
        result = train(config, str(tmp_path / name), verbose=0, datasets=small_datasets(bundled_splits, n_train=512))
        runs[name] = (list(passes), result.history["history"])
    assert runs["memory"][0] == [0] and runs["keras"][0] == []
    for key in ("loss", "val_loss", "val_reconstruction", "val_kl", "val_elbo"):
        assert runs["keras"][1][key] == pytest.approx(runs["memory"][1][key], rel=1e-6), key


def test_training_lowers_the_loss(small_run):
    """64 steps on 2,048 bundled digits. The decoder starts at the mean image (~206
    nats on these digits); training goes well below it (measured: epoch means 207 ->
    191 nats, validation -ELBO 199 -> 182)."""
    h = small_run.history["history"]
    assert h["loss"][1] < h["loss"][0] - 5, h["loss"]
    assert -h["val_elbo"][1] < -h["val_elbo"][0] - 5, h["val_elbo"]
    assert -h["val_elbo"][1] < 195, h["val_elbo"]
    assert h["kl"][1] > 1.0, h["kl"]  # the latent is in use
    for epoch in range(2):
        assert abs(h["val_elbo"][epoch] + h["val_reconstruction"][epoch] + h["val_kl"][epoch]) < 1e-3


def test_save_load_gives_identical_outputs(small_run, heldout_binary, assert_same_model):
    trained = small_run.model
    loaded = load(small_run.run_dir)
    assert isinstance(loaded, VAE)
    x = heldout_binary[0][:8]
    assert_same_model(trained, loaded, x)
    np.testing.assert_array_equal(
        loaded.log_prob(x, num_samples=10, seed=5).numpy(), trained.log_prob(x, num_samples=10, seed=5).numpy()
    )
    # The last epoch's checkpoint holds the final weights too.
    from_checkpoint = VAE(trained.config)
    from_checkpoint.load_weights(os.path.join(small_run.run_dir, "checkpoints", "last")).expect_partial()
    np.testing.assert_array_equal(from_checkpoint.reconstruct(x).numpy(), trained.reconstruct(x).numpy())


def test_finished_run_cannot_be_resumed_or_overwritten(small_run):
    config = RunConfig(model=SMALL_MODEL, train=SMALL_TRAIN)
    with pytest.raises(TrainingError, match="no unfinished run"):
        train(config, small_run.run_dir, resume=True, verbose=0)
    with pytest.raises(TrainingError, match="already holds a run"):
        train(config, small_run.run_dir, verbose=0)


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(TrainingError, match="does not exist"):
        load(str(tmp_path / "missing"))
    with pytest.raises(TrainingError, match="config.json is missing"):
        load(str(tmp_path))
    RunConfig(model=SMALL_MODEL).save(tmp_path / "config.json")
    with pytest.raises(TrainingError, match="did not finish"):
        load(str(tmp_path))
    with pytest.raises(TrainingError, match="no config.json"):
        train(RunConfig(), str(tmp_path / "fresh"), resume=True)


def test_load_names_weights_that_do_not_fit_the_config(small_run, tmp_path):
    """A config.json that no longer matches the saved weights (edited, or from an
    earlier layout) gives a TrainingError naming the run, not a checkpoint traceback."""
    run = tmp_path / "run"
    shutil.copytree(small_run.run_dir, run)
    config = RunConfig.load(run / "config.json")
    RunConfig(model=config.model.replace(latent_dim=config.model.latent_dim + 1), train=config.train).save(
        run / "config.json"
    )
    with pytest.raises(TrainingError, match="do not fit the model its config.json describes"):
        load(str(run))


# === Strategy selection ===


def test_choose_strategy_is_the_default_strategy_on_this_cpu_machine(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert not tf.config.list_logical_devices("GPU")
    strategy = choose_strategy()
    assert strategy is tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == 1
    # One worker named in TF_CONFIG is still a single machine.
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 0}}))
    assert choose_strategy() is tf.distribute.get_strategy()


def test_choose_strategy_picks_multiworker_when_tf_config_names_two_workers(monkeypatch):
    created = []
    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", lambda *a, **k: created.append("mw") or "mw")
    monkeypatch.setattr(tf.distribute, "MirroredStrategy", lambda *a, **k: created.append("mirrored") or "mirrored")
    tf_config = {"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert choose_strategy() == "mw"
    assert created == ["mw"]


def test_choose_strategy_picks_mirrored_over_several_gpus(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setattr(tf.distribute, "MirroredStrategy", lambda *a, **k: "mirrored")
    real = tf.config.list_logical_devices
    monkeypatch.setattr(tf.config, "list_logical_devices",
                        lambda kind=None: ["/gpu:0", "/gpu:1"] if kind == "GPU" else real(kind))
    assert choose_strategy() == "mirrored"


# === MirroredStrategy over two logical CPUs ===

MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    sys.path.insert(0, sys.argv[2])
    from test_training import SMALL_MODEL, SMALL_TRAIN, small_datasets
    from vae_tf import RunConfig, load_splits, train

    splits = load_splits("bundled")
    # XLA draws other numbers than the TF kernels for the same stateless seed, so both
    # runs go without jit: the one-device run by config, the mirrored run asks for jit
    # and train() must turn it off, since XLA cannot compile it there.
    model = SMALL_MODEL.replace(hidden_units=(32,), **json.loads(sys.argv[3]))
    config = RunConfig(model=model, train=SMALL_TRAIN.replace(jit_compile=True))
    out = {}
    for name, strategy, run_config in (
        ("one", tf.distribute.get_strategy(), RunConfig(model=model, train=SMALL_TRAIN.replace(jit_compile=False))),
        ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), config),
    ):
        # The global seed enters the shuffle's seed: set it the same before each pipeline.
        keras.utils.set_random_seed(0)
        datasets = small_datasets(splits, n_train=1024)
        result = train(run_config, os.path.join(sys.argv[1], name), strategy=strategy, verbose=0, datasets=datasets)
        model = result.model
        out[name] = {
            "replicas": strategy.num_replicas_in_sync,
            "jit_compile": bool(model.jit_compile),
            "steps": int(model.optimizer.iterations.numpy()),
            "loss": result.history["history"]["loss"],
            "val_elbo": result.history["history"]["val_elbo"],
            "weights": [w.numpy().tolist() for w in model.trainable_weights],
        }
    print("RESULT " + json.dumps(out))
    """
)


@pytest.mark.parametrize(
    "changes", [{}, {"latent_layers": [8, 4]}, {"iwae_samples": 3, "iwae_gradient": "dreg"}],
    ids=["one-layer", "hierarchy", "iwae-dreg"],
)
def test_mirrored_strategy_on_two_cpus_matches_one_device(tmp_path, changes):
    """Two logical CPU devices must be configured before TensorFlow starts, so this runs
    in a subprocess. Same data, seed and initial weights; the training noise is a
    stateless function of (noise_seed, step, position in the global batch), so two
    replicas take the same steps as one device, up to float summation order.

    Measured: max |w_mirrored - w_one| / max |w_one| per variable ~2e-6 after 32
    steps (the logits kernel; the rest ~2e-7); asserted below 1e-4."""
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), os.path.dirname(__file__), json.dumps(changes)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    one, mirrored = out["one"], out["mirrored"]
    assert one["replicas"] == 1 and mirrored["replicas"] == 2
    # XLA cannot compile a step mirrored over local CPUs: train() turned jit off there,
    # although the config asked for it.
    assert mirrored["jit_compile"] is False and one["jit_compile"] is False
    assert one["steps"] == mirrored["steps"] == 32
    np.testing.assert_allclose(mirrored["loss"], one["loss"], rtol=1e-5)
    # The validation pass (every replica evaluates whole batches; the metrics sum over
    # replicas) gives the one device's figures.
    np.testing.assert_allclose(mirrored["val_elbo"], one["val_elbo"], rtol=1e-5)
    worst = 0.0
    for a, b in zip(one["weights"], mirrored["weights"]):
        a, b = np.asarray(a), np.asarray(b)
        worst = max(worst, float(np.max(np.abs(a - b)) / np.max(np.abs(a))))
    print(f"mirrored vs one device: max relative weight difference {worst:.2e}")
    assert worst < 1e-4, worst
    # The weights moved far more than that from their initialization.
    assert one["loss"][1] < one["loss"][0] - 1


def test_evaluate_is_never_xla_compiled(heldout_binary):
    """`VAE.make_test_function` keeps the evaluation step out of XLA even when the
    train step is compiled (`jit_compile=True`, the default on a GPU): XLA draws other
    numbers for the same stateless noise, so a compiled pass would differ from the
    uncompiled step by about 0.1-1 nats (Keras reads `jit_compile` when it traces the
    function, after `make_test_function` returned)."""
    import tf_keras as keras

    x = heldout_binary[0][:64]
    labels = np.zeros(len(x), np.int32)
    model = VAE(SMALL_MODEL)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True)
    evaluated = model.evaluate(x, labels, batch_size=64, verbose=0, return_dict=True)
    for metric in model.metrics:
        metric.reset_state()
    eager = {k: float(v) for k, v in model.test_step((tf.constant(x), tf.constant(labels))).items()}
    assert model.jit_compile  # the train step would still be compiled
    for name in ("loss", "reconstruction", "kl", "elbo"):
        assert evaluated[name] == pytest.approx(eager[name], rel=1e-5, abs=1e-3), name


def test_multi_step_train_function_traces_the_step_once_and_matches_keras(heldout_binary):
    """`VAE.make_train_function` runs `steps_per_execution` steps in one traced loop that
    traces `train_step` once (Keras' own traces it twice: the first iteration, then the
    loop body) and takes exactly Keras' steps: same weights after 8 steps."""
    import tf_keras as keras

    x = heldout_binary[0][:256]
    labels = np.zeros(len(x), np.int64)
    weights = {}
    for name in ("ours", "keras"):
        keras.utils.set_random_seed(0)
        model = VAE(SMALL_MODEL)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), steps_per_execution=4)
        traced = []
        step = model.train_step
        model.train_step = lambda data, step=step: traced.append(1) or step(data)
        if name == "keras":
            model.make_train_function = lambda force=False, m=model: keras.Model.make_train_function(m, force)
        model.fit(x, labels, batch_size=32, epochs=1, shuffle=False, verbose=0)
        assert int(model.optimizer.iterations) == 8
        traces = model.train_function.experimental_get_tracing_count()
        assert len(traced) == (1 if name == "ours" else 2) * traces, (name, len(traced), traces)
        weights[name] = [w.numpy() for w in model.weights]
    for a, b in zip(weights["ours"], weights["keras"]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
