"""Training: pick a `tf.distribute` strategy, build the VAE in its scope, and run one
`model.fit` over all epochs with checkpoints, BackupAndRestore, TensorBoard and
TerminateOnNaN. `train(run_config, run_dir)` is the whole job; the CLI calls it.

A run directory holds:

    config.json      the RunConfig (model + train)
    weights/         the final weights (TF checkpoint format, prefix weights/vae)
    checkpoints/     the weights after the last completed epoch
    backup/          BackupAndRestore state while a run is unfinished (--resume)
    history.csv      per-epoch metrics (appended across resumes)
    history.json     per-epoch metrics, epoch times and throughput, and the resumes
    resumes.json     while a resumed run is unfinished: where each resume started
    logs/            TensorBoard

`run_dir` may be a local path or a URL that `tf.io.gfile` reads and writes, such as
gs://bucket/runs/mnist (GCS) or ram://runs/mnist (memory): see `vae_tf.fileio`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import tensorflow as tf
import tf_keras as keras

from vae_tf import fileio, interrupts
from vae_tf.config import ConfigError, UserError, RunConfig, TrainConfig, VAEConfig, write_text_atomic
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


def use_xla(train: TrainConfig, model: VAEConfig, strategy: tf.distribute.Strategy) -> bool:
    """Whether the train step is XLA-compiled: `train.jit_compile` when set; by
    default (None) yes, except for convolutional networks on a CPU, which oneDNN runs
    faster than XLA (default `conv`, 2 epochs on 1,024 digits: 26 s without XLA,
    42 s with; `conv-small`: 2.7x), and never for replicas that are all CPUs
    (`_replicas_on_cpus_only`)."""
    if _replicas_on_cpus_only(strategy):
        return False
    if train.jit_compile is not None:
        return train.jit_compile
    return model.architecture == "mlp" or bool(tf.config.list_logical_devices("GPU"))


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


def _dedupe_history(csv_path: str) -> None:
    """Keeps one row per epoch (the last one written) in epoch order.

    CSVLogger appends on resume; BackupAndRestore restarts at the epoch after its last
    backup, so a run killed between the backup and the CSV row can repeat an epoch."""
    if not fileio.exists(csv_path):
        return
    with fileio.open_file(csv_path, newline="") as f:
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
    with fileio.open_file(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for epoch in sorted(by_epoch):
            writer.writerow(by_epoch[epoch])
    fileio.replace(tmp, csv_path)


RESUMES_FILE = "resumes.json"


def _read_resumes(run_dir: str) -> list[dict]:
    """The resume records of `run_dir/resumes.json` (an empty list if there is none)."""
    path = os.path.join(run_dir, RESUMES_FILE)
    if not fileio.exists(path):
        return []
    with fileio.open_file(path) as f:
        return json.load(f)


class ResumeRecorder(keras.callbacks.Callback):
    """Placed after BackupAndRestore in a resumed run: at the start of the first epoch
    that runs (after the restore, before the first new step) it records where the run
    continues, `{"at_epoch": k + 1, "completed_epochs": k, "optimizer_step": S}` (epochs
    counted from 1 as in Keras' progress lines, S = the restored
    `optimizer.iterations`), and on the chief prints "resuming at epoch k+1 of E ..."
    and appends the record to `run_dir/resumes.json`, which `train` folds into
    history.json as "resumed" once the run finishes."""

    def __init__(self, run_dir: str, epochs: int, chief: bool):
        super().__init__()
        self.run_dir, self.epochs, self.chief = run_dir, epochs, chief
        self.record: dict | None = None

    def _record(self, completed: int) -> None:
        step = int(self.model.optimizer.iterations.numpy())
        self.record = {"at_epoch": completed + 1, "completed_epochs": completed, "optimizer_step": step}
        if self.chief:
            print(
                f"resuming at epoch {completed + 1} of {self.epochs} "
                f"({completed} epochs completed, optimizer step {step})",
                flush=True,
            )
            records = _read_resumes(self.run_dir) + [self.record]
            write_text_atomic(os.path.join(self.run_dir, RESUMES_FILE), json.dumps(records, indent=2) + "\n")

    def on_epoch_begin(self, epoch, logs=None):
        if self.record is None:
            self._record(epoch)

    def on_train_end(self, logs=None):
        if self.record is None:  # Killed after the last epoch's backup: no epoch was left.
            self._record(self.epochs)


class InterruptGuard(keras.callbacks.Callback):
    """The first callback: tracks the epoch in progress and holds a Ctrl-C or SIGTERM
    (`vae_tf.interrupts`, under the CLI) that arrives while an epoch's end is written
    (backup, checkpoint, history.csv row, TensorBoard) until its `releaser`, the last
    callback, has run, so that an interrupt leaves all of an epoch's files or none. From
    `on_train_end` (where BackupAndRestore deletes its backup) it holds signals until
    `train` has written the final weights, so that a run is never left with neither."""

    def __init__(self):
        super().__init__()
        self.epoch: int | None = None  # epoch in progress, 0-based
        self.completed: int | None = None  # last epoch whose end was written
        self.releaser = _ReleaseInterrupts(self)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        interrupts.hold()

    def on_train_end(self, logs=None):
        interrupts.hold()


class _ReleaseInterrupts(keras.callbacks.Callback):
    def __init__(self, guard: InterruptGuard):
        super().__init__()
        self.guard = guard

    def on_epoch_end(self, epoch, logs=None):
        self.guard.completed = epoch
        interrupts.release()


def _remove_new_entries(run_dir: str, existed: bool, before: set[str]) -> bool:
    """Removes what `train` wrote into a local `run_dir` (the directory itself if it
    created it); False where it cannot (a gfile URL)."""
    if not fileio.is_local(run_dir):
        return False
    if not existed:
        fileio.rmtree(run_dir)
        return True
    for name in set(os.listdir(run_dir)) - before:
        path = os.path.join(run_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            fileio.rmtree(path)
        else:
            os.remove(path)
    return True


@dataclass
class TrainResult:
    model: VAE
    run_dir: str
    history: dict
    datasets: Datasets


def _read_history(csv_path: str) -> dict[str, list[float]]:
    with fileio.open_file(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    history: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            history.setdefault(key, []).append(float(value) if value not in ("", None, "NA") else math.nan)
    # CSVLogger adds val_ columns (all "NA") to a run without a validation split.
    return {k: v for k, v in history.items() if not (k.startswith("val_") and all(map(math.isnan, v)))}


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
    run_dir = fileio.absolute(run_dir)
    config_path = os.path.join(run_dir, "config.json")
    backup_dir = os.path.join(run_dir, "backup")
    # The strategy first: MultiWorkerMirroredStrategy must exist before other TF ops run,
    # and only the chief checks and writes the (possibly shared) run directory.
    strategy = strategy or choose_strategy()
    chief = is_chief(strategy)
    if resume:
        if not fileio.exists(config_path):
            raise TrainingError(f"cannot resume: {run_dir} has no config.json; start a new run without --resume.")
        if not fileio.has_files(backup_dir):
            raise TrainingError(
                f"cannot resume: {run_dir} holds no unfinished run (no backup/ directory); "
                "it finished already or never started an epoch."
            )
        run_config = RunConfig.load(config_path)
    elif chief and fileio.exists(config_path):
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
            test_fraction=train_cfg.test_fraction,
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
            jit_compile=use_xla(train_cfg, model_cfg, strategy),
            steps_per_execution=train_cfg.steps_per_execution,
        )
        # Create the optimizer's slots now: BackupAndRestore restores model and optimizer
        # state in on_train_begin, before the first step would build them.
        model.optimizer.build(model.trainable_variables)
    keras.mixed_precision.set_global_policy(previous_policy)

    nan_guard = NaNGuard()
    guard = InterruptGuard()
    callbacks = [
        guard,
        EpochTimer(),
        nan_guard,
        # The same directory on every worker: under MultiWorkerMirroredStrategy the chief
        # writes backup/chief, the others write throw-away copies beside it, and on
        # resume every worker restores the chief's (shared storage, as for the run).
        keras.callbacks.BackupAndRestore(backup_dir),
        # After BackupAndRestore: it reports the state that one restored.
        *([ResumeRecorder(run_dir, train_cfg.epochs, chief)] if resume else []),
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
    callbacks.append(guard.releaser)
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2

    existed = fileio.isdir(run_dir)
    before = set(os.listdir(run_dir)) if existed and fileio.is_local(run_dir) else set()
    try:
        # The run directory is written only from here on: a bad flag, bad data or a model
        # that cannot be built leave nothing behind.
        fileio.makedirs(write_dir)
        if chief and not resume:
            run_config.save(config_path)
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=train_cfg.epochs,
            steps_per_epoch=datasets.steps_per_epoch,
            callbacks=callbacks,
            verbose=verbose,
        )
    except (KeyboardInterrupt, UserError) as err:
        interrupts.reset_holds()
        # Before the first completed epoch a new run holds nothing worth keeping (no
        # backup to resume from): remove what this call wrote, so that the same command
        # starts over. A resumed run keeps its backup.
        removed = False
        if chief and not resume and guard.completed is None and not fileio.has_files(backup_dir):
            removed = _remove_new_entries(run_dir, existed, before)
        if isinstance(err, KeyboardInterrupt):
            err.training = {
                "finished": False, "epoch": guard.epoch, "epoch_completed": guard.epoch is not None and guard.completed == guard.epoch,
                "resumable": fileio.has_files(backup_dir), "removed": removed, "run_dir": run_dir,
            }
        raise
    if nan_guard.fired:
        interrupts.reset_holds()
        checkpoint = os.path.join(run_dir, "checkpoints", "last")
        if fileio.exists(checkpoint + ".index"):
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
        # Every resume of this run, in order (the chief wrote them into resumes.json
        # before its first step after each resume, so every worker reads them here).
        "resumed": _read_resumes(run_dir) if resume else [],
    }
    if chief:
        save_weights(model, run_dir)
        # BackupAndRestore deletes its checkpoint on success but leaves the folder.
        fileio.rmtree(backup_dir)
        write_text_atomic(os.path.join(run_dir, "history.json"), json.dumps(summary, indent=2) + "\n")
        if resume:
            fileio.remove(os.path.join(run_dir, RESUMES_FILE))
    else:
        # Saving under MultiWorkerMirroredStrategy is collective: every worker saves,
        # the others into their scratch directory, which is then removed.
        save_weights(model, write_dir)
        fileio.rmtree(write_dir)
    try:
        interrupts.release()  # held since on_train_end; raises Interrupted now if one came
    except KeyboardInterrupt as err:
        err.training = {"finished": True, "run_dir": run_dir}
        raise
    return TrainResult(model=model, run_dir=run_dir, history=summary, datasets=datasets)


def save_weights(model: VAE, run_dir: str) -> None:
    """Writes the weights to `run_dir/weights/` through a temporary directory."""
    final = os.path.join(run_dir, "weights")
    tmp = os.path.join(run_dir, f".weights-tmp-{os.getpid()}")
    fileio.rmtree(tmp)
    model.save_weights(os.path.join(tmp, "vae"))
    fileio.replace_directory(tmp, final, last_suffix=".index")


def load(run_dir: str) -> VAE:
    """Rebuilds the VAE of a run directory from its config.json and final weights."""
    return load_run(run_dir)[0]


def load_run(run_dir: str) -> tuple[VAE, RunConfig]:
    """The trained VAE of a run directory and the RunConfig it was trained with."""
    config_path = os.path.join(run_dir, "config.json")
    if not fileio.isdir(run_dir):
        raise TrainingError(f"run directory {run_dir!r} does not exist; train one with `vae-tf train --out {run_dir}`.")
    if not fileio.exists(config_path):
        raise TrainingError(f"{run_dir} is not a run directory: config.json is missing.")
    prefix = os.path.join(run_dir, WEIGHTS_PREFIX)
    if not fileio.exists(prefix + ".index"):
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
