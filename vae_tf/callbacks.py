"""The Keras callbacks of a training run; `vae_tf.training.train` puts them together.

In the order `train` lists them:

- `InterruptGuard`: holds Ctrl-C/SIGTERM while an epoch's files are written, until
  its `releaser` (the last callback) has run, and from `on_train_end` until the final
  weights exist.
- `EpochTimer`: `step_seconds` and `epoch_seconds` of every epoch into the logs; its
  `end` callback marks where an epoch's time stops (after the checkpoint, before the
  loggers).
- `NaNGuard`: `TerminateOnNaN` that remembers it fired.
- `Validation`: the validation pass over batches held in memory, one call per epoch.
- `RunCheckpoints`: `backup/` (Keras `BackupAndRestore`) and `checkpoints/last`,
  written together on a `CheckpointSchedule`, and an in-memory copy of the last
  completed epoch that a stop between two checkpoints writes out.
- `ResumeRecorder`: in a resumed run, where it continued (`resumes.json`).
- `EpochSummaries`: the TensorBoard scalars of every epoch.

And the history-file helpers: `dedupe_history`, `read_resumes`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import numbers
import os
import time

import tensorflow as tf
import tf_keras as keras

from vae_tf import fileio, interrupts
from vae_tf.config import checkpoint_cadence, write_text_atomic

RESUMES_FILE = "resumes.json"
# Validation splits up to this size (float32 pixels) are held in memory for the fast
# pass; larger ones go through Keras' own validation (`Validation.fits_in_memory`).
VALIDATION_MEMORY_BYTES = 256 * 2**20


# === Timing ===


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of every epoch, written into the epoch's logs.

    - `step_seconds`: the epoch's training steps, from its start to the validation pass;
      training throughput (images/s) is computed from it.
    - `epoch_seconds`: the whole epoch, end to end: from the end of the previous epoch
      (for the first epoch a process runs, from its start) to the point where `end`, a
      second callback, runs. `train` places `end` after the validation pass, the
      checkpoint and the backup, and before the loggers, so the time includes all the
      work an epoch waits for; the loggers' own work counts in the next epoch.

    `first_seconds` and `first_end_time` are the `epoch_seconds` of the first epoch this
    process ran and the Unix time at which it ended.
    """

    def __init__(self):
        super().__init__()
        self.end = _EpochTimerEnd(self)
        self.first_seconds: float | None = None
        self.first_end_time: float | None = None
        self._start = self._train_end = self._last_end = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = self._last_end if self._last_end is not None else time.perf_counter()
        self._train_end = None

    def on_test_begin(self, logs=None):  # Keras' validation pass (`Validation` not used)
        self._mark_train_end()

    def on_epoch_end(self, epoch, logs=None):  # before `Validation`: the steps are done
        self._mark_train_end()

    def _mark_train_end(self):
        if self._train_end is None:
            self._train_end = time.perf_counter()


class _EpochTimerEnd(keras.callbacks.Callback):
    def __init__(self, timer: EpochTimer):
        super().__init__()
        self.timer = timer

    def on_epoch_end(self, epoch, logs=None):
        timer, end = self.timer, time.perf_counter()
        if timer.first_end_time is None:
            timer.first_end_time = time.time()
            timer.first_seconds = end - timer._start
        if logs is not None:
            logs["epoch_seconds"] = end - timer._start
            logs["step_seconds"] = (timer._train_end or end) - timer._start
        timer._last_end = end


# === NaN ===


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


# === Validation ===


class Validation(keras.callbacks.Callback):
    """The validation pass at the end of every epoch, over batches held in memory.

    `model.evaluate` (and `fit(validation_data=...)`) creates and tears down an input
    iterator and calls back into Python around every pass: on the bundled digits that
    took three to five times as long as the 4 batches' computation. Here the batches
    are read once, kept as two tensors (images and labels), and each pass is one call
    of a `tf.function` (eager in the first epoch, see `_EagerFirst`) that runs
    `model.test_step` on every batch in turn: the same batches and the same step, so
    the same numbers as `model.evaluate` without XLA (never XLA-compiled, as
    `VAE.make_test_function` intends). Under a strategy with several replicas every
    replica evaluates whole batches, and the metrics (sums and counts over all of
    them) give the same means. The results go into the epoch's logs as `val_<metric>`.

    Args:
        dataset: tf.data.Dataset of (images, labels) batches: the validation split.
        batch_size: int. The largest batch in `dataset`.
    """

    def __init__(self, dataset: tf.data.Dataset, batch_size: int):
        super().__init__()
        images, labels = [], []
        for x, y in dataset:
            images.append(x)
            labels.append(y)
        self.images = tf.concat(images, axis=0)
        self.labels = tf.concat(labels, axis=0)
        self.batch_size = batch_size
        self._run = None

    @staticmethod
    def fits_in_memory(num_images: int, image_shape, strategy: tf.distribute.Strategy) -> bool:
        """Whether the fast pass applies: a split of at most `VALIDATION_MEMORY_BYTES`
        of float32 pixels, and a strategy that runs steps of any batch size (not TPU,
        which needs static shapes and keeps Keras' own validation)."""
        size = 4 * num_images * math.prod(int(d) for d in image_shape)
        return size <= VALIDATION_MEMORY_BYTES and "TPU" not in type(strategy).__name__

    def _make_run(self):
        model, strategy = self.model, self.model.distribute_strategy
        images, labels, batch = self.images, self.labels, self.batch_size
        num_batches = -(-int(images.shape[0]) // batch)

        def body(i):
            start = i * batch
            data = (images[start : start + batch], labels[start : start + batch])
            strategy.run(model.test_step, args=(data,))
            return (i + 1,)

        def run():
            for metric in model.metrics:
                metric.reset_state()
            tf.while_loop(lambda i: i < num_batches, body, (tf.constant(0),))
            return {metric.name: metric.result() for metric in model.metrics}

        # The first pass eagerly (0.1-0.15 s on the bundled digits, against 0.3-0.4 s
        # to trace it): the trace is paid in the second epoch.
        return _EagerFirst(run)

    def on_epoch_end(self, epoch, logs=None):
        if self._run is None:
            self._run = self._make_run()
        results = self._run()
        if logs is not None:
            logs.update({f"val_{name}": float(value) for name, value in results.items()})


# === Checkpoints ===


@dataclasses.dataclass(frozen=True)
class CheckpointSchedule:
    """When a run writes its checkpoint (`backup/` and `checkpoints/last`).

    Every `epochs` epochs (counted from the run's first epoch, so a resumed run keeps
    the same epochs), or at the end of the first epoch that ends `seconds` or more after
    the last checkpoint (or after training started); and always at the end of the last
    epoch. `TrainConfig.checkpoint_every` gives one of the two: "5" or "30s".
    """

    epochs: int | None = None
    seconds: float | None = None

    @classmethod
    def parse(cls, every) -> "CheckpointSchedule":
        epochs, seconds = checkpoint_cadence(every)
        return cls(epochs=epochs, seconds=seconds)

    def due(self, epoch: int, last_epoch: int, seconds_since_last: float) -> bool:
        """Whether the end of `epoch` (0-based; `last_epoch` is the run's last) writes a
        checkpoint, `seconds_since_last` after the previous one."""
        if epoch >= last_epoch:
            return True
        if self.epochs is not None:
            return (epoch + 1) % self.epochs == 0
        return seconds_since_last >= self.seconds

    def describe(self) -> str:
        if self.epochs is not None:
            return "every epoch" if self.epochs == 1 else f"every {self.epochs} epochs"
        return f"every {self.seconds:g} s"


class _EagerFirst:
    """Calls `fn` eagerly the first time and through a `tf.function` afterwards. The
    end-of-epoch functions here take 6-8 ms eagerly and 1.5-2 ms traced, and tracing
    one takes 0.1-0.2 s: traced from the second epoch on, that cost is not part of the
    first epoch, and a run of 30 epochs or more wins it back (measured on 2 cores)."""

    def __init__(self, fn):
        self.fn, self.traced, self.calls = fn, tf.function(fn, autograph=False), 0

    def __call__(self, *args):
        self.calls += 1
        return (self.fn if self.calls == 1 else self.traced)(*args)


def _all_finite(variables) -> tf.Tensor:
    checks = [tf.reduce_all(tf.math.is_finite(v)) for v in variables if v.dtype.is_floating]
    return tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)


class RunCheckpoints(keras.callbacks.BackupAndRestore):
    """`backup/` and `checkpoints/last` of a run, written together on a schedule.

    `backup/` is Keras' `BackupAndRestore` state (model, optimizer, step counter and
    epoch), which `--resume` restores in `on_train_begin`; `checkpoints/last` holds the
    model's weights alone. Both are written at the end of the epochs `schedule` names
    (always the last one), never with non-finite weights.

    Between two checkpoints the state after the last completed epoch is kept in memory
    (a copy of every variable, taken at each epoch end when the weights are finite:
    about 2 ms for the `mlp` preset on 2 cores). `write_last_completed()` writes
    that copy out when a run stops early: `train` calls it on Ctrl-C, SIGTERM or an
    exception (as a backup and checkpoint, so `--resume` continues after the last
    completed epoch), and after a NaN loss (the checkpoint only: the last good
    weights). A SIGKILL or a power cut loses what was trained since the last checkpoint.

    Args:
        backup_dir: str. The run's `backup/` directory (the same on every worker).
        checkpoint_path: str. Prefix of the weights checkpoint (`checkpoints/last`).
        schedule: CheckpointSchedule.
        nan_guard: NaNGuard or None. No checkpoint is written once it fired.
        multi_worker: bool. Several workers train together: the schedule's decision is
            agreed between them (saving is collective), and `write_last_completed`
            writes only the weights checkpoint after a NaN (a stop of one worker alone
            cannot save).
    """

    def __init__(self, backup_dir: str, checkpoint_path: str, schedule: CheckpointSchedule, *,
                 nan_guard: NaNGuard | None = None, multi_worker: bool = False):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=True)
        self.checkpoint_path = checkpoint_path
        self.schedule = schedule
        self.nan_guard = nan_guard
        self.multi_worker = multi_worker
        self.saved_epoch: int | None = None  # last epoch written to backup/ and checkpoints/last
        self.kept_epoch: int | None = None  # last completed finite epoch, copied in memory
        self.written = 0  # checkpoints written by this process
        self._last_time = None

    # --- state copy ---

    def _state(self) -> list[tf.Variable]:
        """What a backup holds that training changes: the model's weights, the
        optimizer's variables and Keras' train counter (not the metrics, which every
        epoch resets)."""
        model = self.model
        metric_ids = {id(v) for m in model.metrics for v in m.variables}
        state, seen = [], set()
        for v in [*model.weights, *model.optimizer.variables, getattr(model, "_train_counter", None)]:
            if v is not None and id(v) not in seen and id(v) not in metric_ids:
                seen.add(id(v))
                state.append(v)
        return state

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)  # restores backup/ in a resumed run
        restored = int(self._training_state._ckpt_saved_epoch.numpy())
        self.saved_epoch = restored if restored >= 0 else None
        self.kept_epoch = self.saved_epoch
        self._last_time = time.monotonic()
        state = self._state()
        trainable = list(self.model.trainable_weights)
        with self.model.distribute_strategy.scope():
            copies = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False) for v in state]

        def copy_all(sources, targets):
            return tf.group([t.assign(s) for s, t in zip(sources, targets)])

        def keep():
            finite = _all_finite(trainable)
            with tf.control_dependencies([tf.cond(finite, lambda: copy_all(state, copies), tf.no_op)]):
                return tf.identity(finite)

        # The first epoch runs `keep` eagerly (20-40 ms) rather than tracing it (0.15 s).
        self._keep = _EagerFirst(keep)
        self._put_back = lambda: copy_all(copies, state)

    # Epoch-level backups only: Keras' per-batch bookkeeping (a variable assignment per
    # call of the train function) is not needed.
    def on_train_batch_begin(self, batch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        if self.nan_guard is not None and self.nan_guard.fired:
            return
        if not bool(self._keep()):
            return
        self.kept_epoch = epoch
        due = self.schedule.due(epoch, self.params["epochs"] - 1, time.monotonic() - self._last_time)
        if self._agree(due):
            self._write(epoch)

    def _agree(self, due: bool) -> bool:
        """`due` on one process; across workers, true if any worker's clock says so."""
        if not self.multi_worker or self.schedule.epochs is not None:
            return due
        strategy = self.model.distribute_strategy
        votes = strategy.run(lambda: tf.constant(1.0 if due else 0.0))
        return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None) > 0)

    def _write(self, epoch: int, *, backup: bool = True) -> None:
        if backup:
            self._training_state._ckpt_saved_epoch.assign(epoch)
            self._training_state.back_up(epoch)
        self.model.save_weights(self.checkpoint_path)
        self.saved_epoch = epoch
        self.written += 1
        self._last_time = time.monotonic()

    def write_last_completed(self, *, backup: bool) -> int | None:
        """Writes the in-memory copy of the last completed epoch when it is newer than
        the last checkpoint, setting the model's variables back to it: `checkpoints/last`,
        and `backup/` too when `backup` (one process only, and before `on_train_end`,
        which removes Keras' backup state). Returns the epoch of the last checkpoint
        now written (0-based), or None if there is none."""
        if self.kept_epoch is None or self.kept_epoch == self.saved_epoch:
            return self.saved_epoch
        if backup and (self.multi_worker or getattr(self, "_training_state", None) is None):
            return self.saved_epoch
        self._put_back()
        for metric in self.model.metrics:  # sums of the unfinished epoch (NaN after a NaN loss)
            metric.reset_state()
        self._write(self.kept_epoch, backup=backup)
        return self.saved_epoch


# === Resumes ===


def read_resumes(run_dir: str) -> list[dict]:
    """The resume records of `run_dir/resumes.json` (an empty list if there is none)."""
    path = os.path.join(run_dir, RESUMES_FILE)
    if not fileio.exists(path):
        return []
    with fileio.open_file(path) as f:
        return json.load(f)


def _history_epochs(csv_path: str) -> list[int]:
    if not fileio.exists(csv_path):
        return []
    with fileio.open_file(csv_path, newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f) if row.get("epoch") not in (None, "")]


class ResumeRecorder(keras.callbacks.Callback):
    """In a resumed run, at the start of the first epoch that runs (after the restore,
    before the first new step): records where the run continues, `{"at_epoch": k + 1,
    "completed_epochs": k, "optimizer_step": S}` (epochs counted from 1 as in Keras'
    progress lines, S = the restored `optimizer.iterations`), plus `"repeated_epochs":
    n` when the stopped run had completed n epochs after its last checkpoint (a kill
    between checkpoints: those epochs are trained again, and their `history.csv` rows
    replaced). On the chief it prints "resuming at epoch k+1 of E ..." and appends the
    record to `run_dir/resumes.json`, which `train` folds into history.json as
    "resumed" once the run finishes."""

    def __init__(self, run_dir: str, epochs: int, chief: bool, history_csv: str | None = None):
        super().__init__()
        self.run_dir, self.epochs, self.chief = run_dir, epochs, chief
        self.history_csv = history_csv
        self.record: dict | None = None

    def _record(self, completed: int) -> None:
        step = int(self.model.optimizer.iterations.numpy())
        self.record = {"at_epoch": completed + 1, "completed_epochs": completed, "optimizer_step": step}
        if self.chief:
            repeated = sum(e >= completed for e in set(_history_epochs(self.history_csv))) if self.history_csv else 0
            again = ""
            if repeated:
                self.record["repeated_epochs"] = repeated
                again = (f"; the {repeated} epoch{'s' if repeated > 1 else ''} after the last checkpoint "
                         f"{'are' if repeated > 1 else 'is'} trained again")
            print(
                f"resuming at epoch {completed + 1} of {self.epochs} "
                f"({completed} epochs completed, optimizer step {step}{again})",
                flush=True,
            )
            records = read_resumes(self.run_dir) + [self.record]
            write_text_atomic(os.path.join(self.run_dir, RESUMES_FILE), json.dumps(records, indent=2) + "\n")

    def on_epoch_begin(self, epoch, logs=None):
        if self.record is None:
            self._record(epoch)

    def on_train_end(self, logs=None):
        if self.record is None:  # Killed after the last epoch's backup: no epoch was left.
            self._record(self.epochs)


# === Interrupts ===


class InterruptGuard(keras.callbacks.Callback):
    """The first callback: tracks the epoch in progress and holds a Ctrl-C or SIGTERM
    (`vae_tf.interrupts`, under the CLI) that arrives while an epoch's end is written
    (validation, checkpoint and backup, history.csv row, TensorBoard) until its
    `releaser`, the last callback, has run, so that an interrupt leaves all of an epoch's
    files or none. From `on_train_end` (where BackupAndRestore deletes its backup) it
    holds signals until `train` has written the final weights, so that a run is never
    left with neither."""

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


# === Logs ===


class EpochSummaries(keras.callbacks.Callback):
    """TensorBoard scalars of every epoch: the logs' metrics as `epoch_<name>` in
    `log_dir/train` and the `val_` ones in `log_dir/validation` (the tags Keras'
    `TensorBoard` callback writes), and `epoch_learning_rate`.

    All of an epoch's scalars are written by one `tf.function` call. Keras'
    `TensorBoard` costs more: a summary op per scalar, Python work at every call of the
    train function, and the train graph written in the first epoch.

    Args:
        log_dir: str. The run's `logs/` directory (local or a tf.io.gfile URL).
    """

    def __init__(self, log_dir: str):
        super().__init__()
        self.log_dir = log_dir
        self._writers = None
        self._write = self._names = None

    def on_train_begin(self, logs=None):
        self._writers = [tf.summary.create_file_writer(os.path.join(self.log_dir, part))
                         for part in ("train", "validation")]

    def _make_write(self, names):
        writers = self._writers

        def write(values, step):
            i = 0
            for writer, group in zip(writers, names):
                with writer.as_default(step=step):
                    for name in group:
                        tf.summary.scalar(f"epoch_{name}", values[i])
                        i += 1

        return _EagerFirst(write)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        logs["learning_rate"] = self._learning_rate()
        scalars = {k: float(v) for k, v in logs.items() if isinstance(v, numbers.Real) and not isinstance(v, bool)}
        train = sorted(k for k in scalars if not k.startswith("val_"))
        val = sorted(k for k in scalars if k.startswith("val_"))
        names = (tuple(train), tuple(k[len("val_"):] for k in val))
        if names != self._names:
            self._write, self._names = self._make_write(names), names
        self._write(tf.constant([scalars[k] for k in train + val], tf.float32), tf.constant(epoch, tf.int64))

    def _learning_rate(self) -> float:
        optimizer = self.model.optimizer
        lr = optimizer.learning_rate
        if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
            lr = lr(optimizer.iterations)
        return float(tf.convert_to_tensor(lr))

    def on_train_end(self, logs=None):
        for writer in self._writers or ():
            writer.close()


# === History files ===


def dedupe_history(csv_path: str) -> None:
    """Keeps one row per epoch (the last one written) in epoch order.

    CSVLogger appends on resume; a resumed run restarts at the epoch after its last
    checkpoint, so epochs completed after it (a kill between checkpoints, or between the
    backup and the CSV row) have two rows."""
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
