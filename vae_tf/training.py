"""Training: pick a `tf.distribute` strategy, build the VAE in its scope, and run one
`model.fit` over all epochs with the callbacks of `vae_tf.callbacks` (validation pass,
checkpoint and backup on a schedule, NaN guard, interrupt guard, history and TensorBoard
logs). `train(run_config, run_dir)` is the whole job; the CLI calls it.

A run directory holds:

    config.json      the RunConfig (model + train)
    weights/         the final weights (TF checkpoint format, prefix weights/vae)
    checkpoints/     the weights at the last checkpoint (`TrainConfig.checkpoint_every`)
    backup/          BackupAndRestore state at the last checkpoint while a run is
                     unfinished (--resume)
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
from vae_tf.callbacks import (
    RESUMES_FILE,
    CheckpointSchedule,
    EpochSummaries,
    EpochTimer,
    InterruptGuard,
    NaNGuard,
    ResumeRecorder,
    RunCheckpoints,
    Validation,
    dedupe_history,
    read_resumes,
)
from vae_tf.config import ConfigError, UserError, RunConfig, TrainConfig, VAEConfig, write_text_atomic
from vae_tf.data import Datasets, ImageOptions, load_datasets
from vae_tf.model import VAE
from vae_tf.optimizers import FusedAdam, FusedAdamW
from vae_tf.progress import EpochLogger, data_lines
from vae_tf.runtime import check_onednn

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
    default (None) on a GPU only, and never for replicas that are all CPUs
    (`_replicas_on_cpus_only`).

    On a CPU XLA does not pay for itself (2 cores, the bundled digits, `model` any of
    the presets): compiling the step takes 3-5 s of CPU, which a default-length run
    (30 epochs of 31 steps) does not win back. The `mlp` preset's steps take 15-25%
    less time compiled (the first epoch then takes 4-7 s instead of 1.4-2.1 s, and the
    run breaks even after 60-100 epochs); the default configuration's run 1.3-1.8x
    slower (IWAE with 5 samples and the mixture prior: 9.7 s of compile against 2.3 s
    of tracing); convolutions 1.6-2.7x slower than oneDNN's. `--jit` turns it on for
    long runs of small MLPs."""
    if _replicas_on_cpus_only(strategy):
        return False
    if train.jit_compile is not None:
        return train.jit_compile
    return bool(tf.config.list_logical_devices("GPU"))


def mixed_precision_policy() -> str:
    """The Keras policy of `TrainConfig.mixed_precision` on this machine: "mixed_float16"
    (with loss scaling) where there is a GPU, else "mixed_bfloat16", which oneDNN runs
    on the CPU's bfloat16 instructions (AVX512_BF16, AMX) where it has them; float16
    has no fast CPU path. Variables and the distribution heads stay float32."""
    return "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"


def make_optimizer(train: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Adam (AdamW with weight decay), with a constant or cosine learning rate; the
    dense updates run as one fused kernel per variable (`optimizers.FusedAdam`)."""
    lr = train.learning_rate
    if train.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=train.epochs * steps_per_epoch, alpha=0.01)
    if train.weight_decay:
        return FusedAdamW(learning_rate=lr, weight_decay=train.weight_decay)
    return FusedAdam(learning_rate=lr)


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


def _multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """True when several workers (processes) train together."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    spec = resolver.cluster_spec().as_dict()
    return sum(len(tasks) for name, tasks in spec.items() if name in ("chief", "worker")) > 1


def _write_last_completed(checkpoints: RunCheckpoints) -> None:
    """After a stop inside `fit`: writes the last completed epoch's state, held in
    memory, when no checkpoint holds it yet (signals held meanwhile). A failure to write
    it is reported on stderr; the caller re-raises the error that stopped training."""
    interrupts.hold()
    try:
        checkpoints.write_last_completed(backup=True)
    except Exception as err:  # noqa: BLE001 - the stop's own error matters more
        print(f"vae-tf: could not write the last completed epoch: {err}", file=sys.stderr)
    finally:
        interrupts.reset_holds()


def process_start_time() -> float | None:
    """The Unix time at which this process started (to 10 ms, from Linux /proc), or
    None where that is not available."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - (uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _since(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start


def _throughput(images: int, seconds: list[float] | None) -> float | None:
    """Images per second of the median epoch after the first (its tracing and
    compilation excluded), or of the only epoch."""
    steady = (seconds[1:] if len(seconds) > 1 else seconds) if seconds else []
    return images / sorted(steady)[len(steady) // 2] if steady else None


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


# The output bias starts at the mean of (at most) this many training images: all of an
# in-memory split of digits, fewer of large pictures (at most 64 MiB of float32 pixels).
OUTPUT_BIAS_IMAGES = 10_000
OUTPUT_BIAS_BYTES = 64 << 20


def output_bias_images(image_shape) -> int:
    """How many training images the output bias is fitted to: up to 10,000, and at most
    64 MiB of float32 pixels (all 4,000 bundled digits; 1,365 64x64 RGB pictures)."""
    per_image = 4 * math.prod(int(d) for d in image_shape)
    return max(1, min(OUTPUT_BIAS_IMAGES, OUTPUT_BIAS_BYTES // per_image))


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
        verbose: what is printed on stdout (`vae_tf.progress`): 0 nothing; 1 a line on
            the data and one per epoch (`epoch 3/30  loss 91.34  rec 76.09  kl 21.66
            -elbo 97.76  val -elbo 106.43  0.9 s`), with a progress bar while each epoch
            runs; 2 the same lines without the bar. Defaults to 1 on a terminal, else 2.
            Keras' own progress output is never used.
        datasets: pipelines to use instead of loading `run_config.train.data`.

    Returns:
        TrainResult with the trained model, the history dict and the datasets.
    """
    called = time.time()
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
    onednn = check_onednn(train_cfg.onednn)
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
            image_options=ImageOptions.of(train_cfg),
            cache=train_cfg.cache,
            augment_shift=train_cfg.augment_shift,
            augment_copies=train_cfg.augment_copies,
        )
    splits = datasets.splits
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    if verbose:
        print("\n".join(data_lines(train_cfg.data, datasets)), flush=True)
    model_cfg = run_config.model
    if tuple(splits.image_shape) != tuple(model_cfg.image_shape):
        model_cfg = model_cfg.replace(image_shape=tuple(splits.image_shape))
    if model_cfg.conditional:
        if splits.num_classes is None:
            raise ConfigError("conditional=True needs labels, but this data source has none.")
        model_cfg = model_cfg.replace(num_classes=splits.num_classes)
    if splits.class_names and splits.num_classes == len(splits.class_names):
        model_cfg = model_cfg.replace(class_names=tuple(splits.class_names))
    run_config = RunConfig(model=model_cfg, train=train_cfg)

    # Workers other than the chief write into a scratch directory that is removed.
    write_dir = run_dir if chief else os.path.join(run_dir, f".worker-{strategy.cluster_resolver.task_id}")

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    if splits.train.in_memory:
        # tf.data's autotuning (a thread that models the pipeline) costs batches
        # gathered from memory more than it buys: without it the parallel map uses every
        # core and the prefetch buffer grows on demand, the mlp preset's steps ran 3.5%
        # faster on 2 cores, and the end of `fit` no longer waits 0.3-10 s while the
        # iterator's teardown stops that thread.
        options.autotune.enabled = False
    # One iterator for the whole run: `fit` re-creates the iterator of a finite dataset
    # every epoch (pipeline start-up inside the epoch, iterator teardown between them).
    train_ds = datasets.train.with_options(options).repeat()
    # The validation pass: over batches held in memory (`callbacks.Validation`, one call
    # per epoch), or, for a split too large for that, Keras' own (`validation_data`).
    validation = val_ds = None
    if datasets.validation is not None:
        if Validation.fits_in_memory(splits.sizes["validation"], model_cfg.image_shape, strategy):
            validation = Validation(datasets.validation, train_cfg.batch_size)
        else:
            val_ds = datasets.validation.with_options(options)

    with strategy.scope():
        model = VAE(model_cfg, noise_seed=train_cfg.seed)
        model.initialize_output_bias(splits.train.head(output_bias_images(splits.image_shape))[0])
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
    timer = EpochTimer()
    checkpoints = RunCheckpoints(
        # The same directory on every worker: under MultiWorkerMirroredStrategy the chief
        # writes backup/chief, the others write throw-away copies beside it, and on
        # resume every worker restores the chief's (shared storage, as for the run).
        backup_dir,
        os.path.join(write_dir, "checkpoints", "last"),
        CheckpointSchedule.parse(train_cfg.checkpoint_every),
        nan_guard=nan_guard,
        multi_worker=_multi_worker(strategy),
    )
    history_csv = os.path.join(write_dir, "history.csv")
    callbacks = [
        guard,
        timer,
        nan_guard,
        *([validation] if validation is not None else []),
        checkpoints,
        # After RunCheckpoints: it reports the state that one restored.
        *([ResumeRecorder(run_dir, train_cfg.epochs, chief, history_csv)] if resume else []),
        # An epoch's time ends here: validation, checkpoint and backup included.
        timer.end,
        keras.callbacks.CSVLogger(history_csv, append=resume),
        EpochSummaries(os.path.join(write_dir, "logs")),
        *([EpochLogger(bar=verbose == 1, header=(
            f"training: {train_cfg.epochs} epochs of {datasets.steps_per_epoch} steps, batch {train_cfg.batch_size}"
            + (f" x {datasets.copies} copies" if datasets.copies > 1 else "")
            + (f", moved up to {train_cfg.augment_shift} px" if train_cfg.augment_shift else "")
            + (f" on {strategy.num_replicas_in_sync} replicas" if strategy.num_replicas_in_sync > 1 else "")
        ))] if verbose else []),
        guard.releaser,
    ]

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
            validation_data=val_ds,  # None with `Validation`
            epochs=train_cfg.epochs,
            steps_per_epoch=datasets.steps_per_epoch,
            callbacks=callbacks,
            verbose=0,  # EpochLogger prints
        )
    except (KeyboardInterrupt, Exception) as err:
        interrupts.reset_holds()
        # A stop between two checkpoints (Ctrl-C, SIGTERM, an error): write the last
        # completed epoch, so that --resume continues after it.
        _write_last_completed(checkpoints)
        if not isinstance(err, (KeyboardInterrupt, UserError)):
            raise
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
        checkpoints.write_last_completed(backup=False)  # the last good weights
        checkpoint = os.path.join(run_dir, "checkpoints", "last")
        if fileio.exists(checkpoint + ".index"):
            kept = f"The last good weights (from the last completed epoch) are kept in {checkpoint}"
        else:
            kept = f"No epoch completed, so no checkpoint was written to {checkpoint}"
        raise TrainingError(
            f"training stopped: the loss became NaN in epoch {nan_guard.epoch}. {kept}; "
            "lower --learning-rate or check the data."
        )

    dedupe_history(history_csv)
    history = _read_history(history_csv)
    images = datasets.steps_per_epoch * train_cfg.batch_size
    started = process_start_time()
    summary = {
        "history": history,
        "images_per_epoch": images,
        # Training throughput: images per second of the training steps.
        "images_per_second": _throughput(images, history.get("step_seconds") or history.get("epoch_seconds")),
        # Whole-epoch throughput: images per second of epoch wall time (validation,
        # checkpoint and backup included).
        "epoch_images_per_second": _throughput(images, history.get("epoch_seconds")),
        # The first epoch this process ran (tracing and compilation included), and when
        # it ended: seconds after the process started and after `train` was called.
        "first_epoch": {
            "seconds": timer.first_seconds,
            "end_time": timer.first_end_time,
            "since_process_start": _since(started, timer.first_end_time),
            "since_train_call": _since(called, timer.first_end_time),
        },
        "checkpoints": {"every": checkpoints.schedule.describe(), "written": checkpoints.written},
        "replicas": strategy.num_replicas_in_sync,
        # The kernels the steps ran on: XLA-compiled, or oneDNN's / TensorFlow's own.
        "jit_compile": bool(model.jit_compile),
        "onednn": onednn,
        "split_sizes": splits.sizes,
        # Every resume of this run, in order (the chief wrote them into resumes.json
        # before its first step after each resume, so every worker reads them here).
        "resumed": read_resumes(run_dir) if resume else [],
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
