"""What a long step prints while it runs: training's epoch lines and progress bar, and the
progress of other loops (IWAE evaluation, the report).

- `epoch_line`: one epoch in nats with fixed decimals,
  `epoch 3/30  loss 91.34  rec 76.09  kl 21.66  -elbo 97.76  val -elbo 106.43  0.9 s`
  (`-elbo` is the negative ELBO of the training batches, `val -elbo` of the validation
  split; `loss` is what the optimizer minimized). A latent hierarchy's line adds the KL
  of each layer, bottom first: `kl 27.85 (20.10 + 7.75)`; a layer near 0 has collapsed.
- `EpochLogger` (a Keras callback; `vae_tf.train` adds it in place of Keras' own
  printing): that line per epoch on stdout, and in a terminal a progress bar (one line
  rewritten in place) while the epoch runs.
- `Progress`: a loop over a known number of items, on stderr: a bar in a terminal,
  otherwise a plain line at each further quarter done once a few seconds have passed
  (a short loop prints nothing, a long one a few lines, never carriage-return spam).
"""

from __future__ import annotations

import shutil
import sys
import time

import tf_keras as keras

# (log key, label, sign): the epoch line's columns; -ELBO shown as a positive number.
EPOCH_COLUMNS = (
    ("loss", "loss", 1.0),
    ("reconstruction", "rec", 1.0),
    ("kl", "kl", 1.0),
    ("elbo", "-elbo", -1.0),
    ("val_elbo", "val -elbo", -1.0),
)
REDRAW_SECONDS = 0.1  # a bar is redrawn at most this often

_open_line = {"stream": None}  # the stream whose last line is a bar still being drawn


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _layer_kls(logs: dict) -> str:
    """` (kl_1 + kl_2 ...)` of a latent hierarchy, bottom layer first, or ""."""
    kls = []
    while _number(logs.get(f"kl_{len(kls) + 1}")) is not None:
        kls.append(_number(logs[f"kl_{len(kls) + 1}"]))
    return f" ({' + '.join(f'{kl:.2f}' for kl in kls)})" if kls else ""


def _columns(logs: dict) -> str:
    parts = []
    for key, label, sign in EPOCH_COLUMNS:
        value = _number(logs.get(key))
        if value is not None:
            parts.append(f"{label} {sign * value:.2f}" + (_layer_kls(logs) if key == "kl" else ""))
    return "  ".join(parts)


def epoch_line(epoch: int, epochs: int, logs: dict, seconds: float | None = None) -> str:
    """`epoch E/N  loss ..  rec ..  kl ..  -elbo ..  val -elbo ..  T s` for the 0-based
    `epoch`; columns whose metric is not in `logs` are left out, and the time is
    `logs["epoch_seconds"]` unless `seconds` is given."""
    seconds = _number(logs.get("epoch_seconds")) if seconds is None else seconds
    line = f"epoch {epoch + 1:>{len(str(epochs))}}/{epochs}  {_columns(logs)}"
    return line + (f"  {seconds:.1f} s" if seconds is not None else "")


def format_seconds(seconds: float) -> str:
    """3.2 s, 45 s, 2.5 min, 1.2 h."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = min(width, int(width * done / total)) if total else width
    return "[" + "=" * filled + (">" if filled < width else "") + "." * max(0, width - filled - 1) + "]"


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _draw(stream, line: str, previous: int) -> int:
    """Rewrites the current line of `stream` with `line` (cut to the terminal's width);
    returns its length."""
    line = line[: max(20, shutil.get_terminal_size().columns - 1)]
    stream.write("\r" + line + " " * max(0, previous - len(line)))
    stream.flush()
    _open_line["stream"] = stream
    return len(line)


def finish_line() -> None:
    """Ends a progress bar left open (the loop stopped by an error or Ctrl-C), so that
    the next message starts on a line of its own."""
    stream, _open_line["stream"] = _open_line["stream"], None
    if stream is not None:
        try:
            stream.write("\n")
            stream.flush()
        except (OSError, ValueError):
            pass


def data_lines(spec, datasets) -> list[str]:
    """What training reads: `data: SPEC: HxWxC images, N train, ...; training images in
    memory` (or streamed), the classes, and one line per note of the source (skipped or
    ignored files)."""
    splits = datasets.splits
    h, w, c = splits.image_shape
    sizes = ", ".join(f"{n:,} {name}" for name, n in splits.sizes.items())
    classes = ""
    if splits.class_names:
        shown = ", ".join(splits.class_names[:5]) + (", ..." if len(splits.class_names) > 5 else "")
        classes = f"; {len(splits.class_names)} classes ({shown})"
    where = "in memory" if splits.train.in_memory else "streamed"
    return [f"data: {spec}: {h}x{w}x{c} images, {sizes}{classes}; training images {where}",
            *(f"data: {note}" for note in datasets.notes)]


class EpochLogger(keras.callbacks.Callback):
    """Prints training progress: `header` (if any) when training begins, then
    `epoch_line` at the end of every epoch on stdout; with `bar`, a progress bar with the
    running averages redrawn in place while the epoch runs (for a terminal).

    Args:
        bar: bool. Draw the progress bar. Defaults to False.
        header: str or None. A line printed when training begins. Defaults to None.
    """

    def __init__(self, bar: bool = False, header: str | None = None):
        super().__init__()
        self.bar = bar
        self.header = header
        self._supports_tf_logs = True  # batch logs stay tensors until a bar is drawn
        self._start = self._drawn_at = 0.0
        self._width = 0
        self._epoch = 0

    def _epochs(self) -> int:
        return int(self.params.get("epochs") or 0)

    def on_train_begin(self, logs=None):
        if self.header:
            print(self.header, flush=True)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._start, self._drawn_at, self._width = epoch, time.perf_counter(), 0.0, 0

    def on_train_batch_end(self, batch, logs=None):
        if not self.bar:
            return
        now = time.perf_counter()
        if now - self._drawn_at < REDRAW_SECONDS:
            return
        self._drawn_at = now
        steps = self.params.get("steps")
        done = f"{batch + 1}/{steps}" if steps else f"{batch + 1}"
        line = (f"epoch {self._epoch + 1:>{len(str(self._epochs()))}}/{self._epochs()} "
                f"{_bar(batch + 1, steps or 0)} {done} {now - self._start:.1f} s  {_columns(logs or {})}")
        self._width = _draw(sys.stdout, line, self._width)

    def on_epoch_end(self, epoch, logs=None):
        line = epoch_line(epoch, self._epochs(), logs or {}, None if "epoch_seconds" in (logs or {})
                          else time.perf_counter() - self._start)
        if self.bar and self._width:  # in place of the bar, whole
            sys.stdout.write("\r" + line + " " * max(0, self._width - len(line)) + "\n")
            _open_line["stream"] = None
            self._width = 0
        else:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def on_train_end(self, logs=None):
        if self._width:  # stopped inside an epoch (NaN)
            finish_line()
            self._width = 0


class Progress:
    """Progress of a loop over `total` items on stderr (or `stream`).

    In a terminal a bar redrawn in place and a last line with the time taken; elsewhere
    a plain line each time a further quarter is done and `quiet_seconds` have passed
    since the start or the last line, so that a short loop prints nothing.

        with Progress(len(images), "IWAE k=1000", unit="images") as progress:
            for batch in batches:
                ...
                progress.add(len(batch))

    Args:
        total: int. Items the loop handles.
        label: str. What is being done.
        unit: str. What the items are. Defaults to "images".
        stream: file or None. Defaults to sys.stderr at the time of the call.
        quiet_seconds: float. Outside a terminal, the least time between lines.
            Defaults to 5.
    """

    def __init__(self, total: int, label: str, *, unit: str = "images", stream=None, quiet_seconds: float = 5.0):
        self.total, self.label, self.unit = int(total), label, unit
        self.stream = sys.stderr if stream is None else stream
        self.terminal = _is_terminal(self.stream)
        self.quiet_seconds = quiet_seconds
        self.done = 0
        self._start = self._last = time.perf_counter()
        self._drawn_at = 0.0
        self._quarter = 0
        self._width = 0

    def add(self, n: int) -> None:
        self.done += int(n)
        now = time.perf_counter()
        elapsed = now - self._start
        left = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        count = f"{self.done:,}/{self.total:,} {self.unit}"
        if self.terminal:
            if now - self._drawn_at >= REDRAW_SECONDS or self.done >= self.total:
                self._drawn_at = now
                line = f"{self.label} {_bar(self.done, self.total)} {count}  {format_seconds(elapsed)}"
                if self.done < self.total:
                    line += f", {format_seconds(left)} left"
                self._width = _draw(self.stream, line, self._width)
            return
        quarter = 4 * self.done // max(1, self.total)
        if quarter > self._quarter and self.done < self.total and now - self._last >= self.quiet_seconds:
            self._quarter, self._last = quarter, now
            print(f"{self.label}: {count} ({100 * self.done // self.total}%), {format_seconds(elapsed)}, "
                  f"about {format_seconds(left)} left", file=self.stream, flush=True)

    def close(self) -> None:
        if self.terminal and self._width:
            finish_line()
            self._width = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
