"""Training: pick a `tf.distribute` strategy, build the VAE in its scope, and run one
`model.fit` over all epochs with checkpoints, BackupAndRestore, TensorBoard and
TerminateOnNaN. `train(run_config, run_dir)` is the whole job; the CLI calls it.

A run directory holds:

    config.json      the RunConfig (model + train)
    weights/         the final weights (TF checkpoint format, prefix weights/vae)
    checkpoints/     the weights after the last completed epoch
    backup/          BackupAndRestore state while a run is unfinished (--resume)
    history.csv      per-epoch metrics (appended across resumes)
    history.json     per-epoch metrics, epoch times and throughput
    logs/            TensorBoard
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass

import tensorflow as tf
import tf_keras as keras

from vae_tf.config import ConfigError, UserError, RunConfig, TrainConfig, write_text_atomic
from vae_tf.data import Datasets, load_datasets
from vae_tf.model import VAE

WEIGHTS_PREFIX = os.path.join("weights", "vae")


class TrainingError(UserError, RuntimeError):
    """Training could not start or did not finish; the message says why."""


def choose_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when TF_CONFIG names several workers,
    MirroredStrategy over several visible GPUs, one device otherwise."""
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    cluster = tf_config.get("cluster", {})
    if sum(len(v) for v in cluster.values()) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    # One device: the default strategy (TensorFlow places ops on the GPU if there is
    # one). OneDeviceStrategy would do the same but BackupAndRestore rejects it.
    return tf.distribute.get_strategy()


def _replicas_on_cpus_only(strategy: tf.distribute.Strategy) -> bool:
    """True when the strategy has several replicas and all of them are CPUs.

    XLA cannot compile such a train step: with several local CPUs the compiled step on
    CPU:0 reads the replica variables on CPU:1 ("Trying to access resource ... located
    in device CPU:1 from device CPU:0"), and across CPU workers it has no collectives
    ("Collectives are not yet implemented for CPU devices when compiling with XLA").
    `train` therefore runs such a strategy without jit_compile.
    """
    if strategy.num_replicas_in_sync <= 1:
        return False
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy has no worker_devices
        return False
    return all("CPU" in d.upper() for d in devices)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes files (the chief, or worker 0 without a chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()
    )


def mixed_precision_policy() -> str:
    """The Keras policy of `TrainConfig.mixed_precision` on this machine: "mixed_float16"
    (with loss scaling) where there is a GPU, else "mixed_bfloat16", which oneDNN runs
    on the CPU's bfloat16 instructions (AVX512_BF16, AMX) where it has them; float16
    has no fast CPU path. Variables and the distribution heads stay float32."""
    return "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"


def make_optimizer(train: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Adam (AdamW with weight decay), with a constant or cosine learning rate."""
    lr = train.learning_rate
    if train.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=train.epochs * steps_per_epoch, alpha=0.01)
    if train.weight_decay:
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=train.weight_decay)
    return keras.optimizers.Adam(learning_rate=lr)


class EpochTimer(keras.callbacks.Callback):
    """Records wall-clock seconds per epoch into the logs: `epoch_seconds` (the whole
    epoch) and `step_seconds` (its training steps, up to the validation pass), the
    time that training throughput (images/s) is computed from."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._train_end = None

    def on_test_begin(self, logs=None):
        if self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            end = time.perf_counter()
            logs["epoch_seconds"] = end - self._start
            logs["step_seconds"] = (self._train_end or end) - self._start


class NaNGuard(keras.callbacks.TerminateOnNaN):
    """TerminateOnNaN that remembers it fired, so `train` can say so."""

    fired = False
    epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        if not self.fired:
            self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        super().on_batch_end(batch, logs)
        if self.model.stop_training:
            self.fired = True


def _all_finite(model: keras.Model) -> bool:
    return all(bool(tf.reduce_all(tf.math.is_finite(w))) for w in model.weights if w.dtype.is_floating)


class FiniteCheckpoint(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint that never replaces the last good weights with non-finite ones.

    TerminateOnNaN stops mid-epoch, but Keras still ends that epoch with `on_epoch_end`,
    where a plain ModelCheckpoint would overwrite `checkpoints/last` with NaN weights.
    """

    def __init__(self, *args, nan_guard: "NaNGuard | None" = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.nan_guard = nan_guard
        self.last_saved_epoch: int | None = None

    def _save_model(self, epoch, batch, logs):
        if (self.nan_guard is not None and self.nan_guard.fired) or not _all_finite(self.model):
            return
        super()._save_model(epoch, batch, logs)
        self.last_saved_epoch = epoch


def _has_files(directory: str) -> bool:
    return any(files for _, _, files in os.walk(directory))


def _dedupe_history(csv_path: str) -> None:
    """Keeps one row per epoch (the last one written) in epoch order.

    CSVLogger appends on resume; BackupAndRestore restarts at the epoch after its last
    backup, so a run killed between the backup and the CSV row can repeat an epoch."""
    if not os.path.exists(csv_path):
        return
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    if not fields or "epoch" not in fields:
        return
    by_epoch = {}
    for row in rows:
        if row.get("epoch") not in (None, ""):
            by_epoch[int(row["epoch"])] = row
    if len(by_epoch) == len(rows) and list(by_epoch) == sorted(by_epoch):
        return
    tmp = f"{csv_path}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for epoch in sorted(by_epoch):
            writer.writerow(by_epoch[epoch])
    os.replace(tmp, csv_path)


@dataclass
class TrainResult:
    model: VAE
    run_dir: str
    history: dict
    datasets: Datasets


def _read_history(csv_path: str) -> dict[str, list[float]]:
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    history: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            history.setdefault(key, []).append(float(value) if value not in ("", None) else math.nan)
    return history


def train(
    run_config: RunConfig,
    run_dir: str,
    *,
    resume: bool = False,
    strategy: tf.distribute.Strategy | None = None,
    verbose: int | None = None,
    datasets: Datasets | None = None,
) -> TrainResult:
    """Trains a VAE and writes its run directory.

    Args:
        run_config: model and training configuration.
        run_dir: output directory; must not hold a finished run unless `resume`.
        resume: continue an interrupted run from its last completed epoch (the
            configuration stored in `run_dir` wins over `run_config`).
        strategy: a `tf.distribute.Strategy`; defaults to `choose_strategy()`.
        verbose: Keras verbosity; defaults to a progress bar on a terminal and one
            line per epoch otherwise.
        datasets: pipelines to use instead of loading `run_config.train.data`.

    Returns:
        TrainResult with the trained model, the history dict and the datasets.
    """
    run_dir = os.path.abspath(run_dir)
    config_path = os.path.join(run_dir, "config.json")
    backup_dir = os.path.join(run_dir, "backup")
    # The strategy first: MultiWorkerMirroredStrategy must exist before other TF ops run,
    # and only the chief checks and writes the (possibly shared) run directory.
    strategy = strategy or choose_strategy()
    chief = is_chief(strategy)
    if resume:
        if not os.path.exists(config_path):
            raise TrainingError(f"cannot resume: {run_dir} has no config.json; start a new run without --resume.")
        if not _has_files(backup_dir):
            raise TrainingError(
                f"cannot resume: {run_dir} holds no unfinished run (no backup/ directory); "
                "it finished already or never started an epoch."
            )
        run_config = RunConfig.load(config_path)
    elif chief and os.path.exists(config_path):
        raise TrainingError(
            f"{run_dir} already holds a run; pass --resume to continue an interrupted one, "
            "or choose another --out directory."
        )
    train_cfg = run_config.train
    if train_cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(train_cfg.seed)
    # The policy applies to layers built while it is set; it is put back once the model
    # exists so that it does not leak into the caller's process.
    previous_policy = keras.mixed_precision.global_policy()
    if train_cfg.mixed_precision:
        keras.mixed_precision.set_global_policy(mixed_precision_policy())

    if datasets is None:
        datasets = load_datasets(
            train_cfg.data,
            batch_size=train_cfg.batch_size,
            preprocessing=train_cfg.preprocessing,
            validation_fraction=train_cfg.validation_fraction,
            split_seed=train_cfg.split_seed,
            seed=train_cfg.seed,
            data_dir=train_cfg.data_dir,
            manual_dir=train_cfg.manual_dir,
        )
    splits = datasets.splits
    model_cfg = run_config.model
    if tuple(splits.image_shape) != tuple(model_cfg.image_shape):
        model_cfg = model_cfg.replace(image_shape=tuple(splits.image_shape))
    if model_cfg.conditional:
        if splits.num_classes is None:
            raise ConfigError("conditional=True needs labels, but this data source has none.")
        model_cfg = model_cfg.replace(num_classes=splits.num_classes)
    run_config = RunConfig(model=model_cfg, train=train_cfg)

    # Workers other than the chief write into a scratch directory that is removed.
    write_dir = run_dir if chief else os.path.join(run_dir, f".worker-{strategy.cluster_resolver.task_id}")
    os.makedirs(write_dir, exist_ok=True)
    if chief and not resume:
        run_config.save(config_path)

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    # One iterator for the whole run: `fit` re-creates the iterator of a finite dataset
    # every epoch (pipeline start-up inside the epoch, iterator teardown between them).
    train_ds = datasets.train.with_options(options).repeat()
    val_ds = datasets.validation.with_options(options) if datasets.validation is not None else None

    with strategy.scope():
        model = VAE(model_cfg, noise_seed=train_cfg.seed)
        model.initialize_output_bias(splits.train_images)
        model.compile(
            optimizer=make_optimizer(train_cfg, datasets.steps_per_epoch),
            jit_compile=train_cfg.jit_compile and not _replicas_on_cpus_only(strategy),
            steps_per_execution=train_cfg.steps_per_execution,
        )
        # Create the optimizer's slots now: BackupAndRestore restores model and optimizer
        # state in on_train_begin, before the first step would build them.
        model.optimizer.build(model.trainable_variables)
    keras.mixed_precision.set_global_policy(previous_policy)

    nan_guard = NaNGuard()
    callbacks = [
        EpochTimer(),
        nan_guard,
        # The same directory on every worker: under MultiWorkerMirroredStrategy the chief
        # writes backup/chief, the others write throw-away copies beside it, and on
        # resume every worker restores the chief's (shared storage, as for the run).
        keras.callbacks.BackupAndRestore(backup_dir),
        FiniteCheckpoint(
            os.path.join(write_dir, "checkpoints", "last"), save_weights_only=True, save_freq="epoch",
            nan_guard=nan_guard,
        ),
        keras.callbacks.CSVLogger(os.path.join(write_dir, "history.csv"), append=resume),
    ]
    try:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(write_dir, "logs"), profile_batch=0))
    except ImportError:  # tensorboard is a dependency, but keep training if it is missing.
        pass
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2

    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=train_cfg.epochs,
        steps_per_epoch=datasets.steps_per_epoch,
        callbacks=callbacks,
        verbose=verbose,
    )
    if nan_guard.fired:
        checkpoint = os.path.join(run_dir, "checkpoints", "last")
        if os.path.exists(checkpoint + ".index"):
            kept = f"The last good weights (from the last completed epoch) are kept in {checkpoint}"
        else:
            kept = f"No epoch completed, so no checkpoint was written to {checkpoint}"
        raise TrainingError(
            f"training stopped: the loss became NaN in epoch {nan_guard.epoch}. {kept}; "
            "lower --learning-rate or check the data."
        )

    _dedupe_history(os.path.join(write_dir, "history.csv"))
    history = _read_history(os.path.join(write_dir, "history.csv"))
    seconds = history.get("step_seconds") or history.get("epoch_seconds", [])
    images = datasets.steps_per_epoch * train_cfg.batch_size
    steady = seconds[1:] if len(seconds) > 1 else seconds
    summary = {
        "history": history,
        "images_per_epoch": images,
        "images_per_second": images / sorted(steady)[len(steady) // 2] if steady else None,
        "replicas": strategy.num_replicas_in_sync,
        "split_sizes": splits.sizes,
    }
    if chief:
        save_weights(model, run_dir)
        # BackupAndRestore deletes its checkpoint on success but leaves the folder.
        shutil.rmtree(backup_dir, ignore_errors=True)
        write_text_atomic(os.path.join(run_dir, "history.json"), json.dumps(summary, indent=2) + "\n")
    else:
        # Saving under MultiWorkerMirroredStrategy is collective: every worker saves,
        # the others into their scratch directory, which is then removed.
        save_weights(model, write_dir)
        shutil.rmtree(write_dir, ignore_errors=True)
    return TrainResult(model=model, run_dir=run_dir, history=summary, datasets=datasets)


def save_weights(model: VAE, run_dir: str) -> None:
    """Writes the weights to `run_dir/weights/` through a temporary directory."""
    final = os.path.join(run_dir, "weights")
    tmp = os.path.join(run_dir, f".weights-tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_weights(os.path.join(tmp, "vae"))
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)


def load(run_dir: str) -> VAE:
    """Rebuilds the VAE of a run directory from its config.json and final weights."""
    return load_run(run_dir)[0]


def load_run(run_dir: str) -> tuple[VAE, RunConfig]:
    """The trained VAE of a run directory and the RunConfig it was trained with."""
    config_path = os.path.join(run_dir, "config.json")
    if not os.path.isdir(run_dir):
        raise TrainingError(f"run directory {run_dir!r} does not exist; train one with `vae-tf train --out {run_dir}`.")
    if not os.path.exists(config_path):
        raise TrainingError(f"{run_dir} is not a run directory: config.json is missing.")
    prefix = os.path.join(run_dir, WEIGHTS_PREFIX)
    if not os.path.exists(prefix + ".index"):
        raise TrainingError(
            f"{run_dir} has no trained weights ({WEIGHTS_PREFIX}.index is missing): the run did not finish; "
            f"resume it with `vae-tf train --resume --out {run_dir}`."
        )
    run_config = RunConfig.load(config_path)
    model = VAE(run_config.model, noise_seed=run_config.train.seed)
    try:
        model.load_weights(prefix).expect_partial()
    except (ValueError, tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrainingError(
            f"the weights in {run_dir} do not fit the model its config.json describes ({first_line}). "
            "Was config.json edited, or the run written by an earlier vae-tf (a conditional model with "
            "the mixture prior now has one mixture per class)? Retrain it with this version."
        ) from e
    return model, run_config
