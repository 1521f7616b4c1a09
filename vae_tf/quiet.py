"""A quiet `vae-tf`: what TensorFlow and the other dependencies print, hidden unless
asked for (`vae-tf --verbose`, or the environment variable `VAE_TF_VERBOSE=1`).

What prints on a CPU-only machine, and what controls it (TensorFlow 2.21):

- TensorFlow's C++ code logs through absl: lines such as `I0000 00:00:... port.cc:153]
  oneDNN custom operations are on ...`, `... cudart_stub.cc:31] Could not find cuda
  drivers ...` and `E0000 ... failed call to cuInit: ...`. `TF_CPP_MIN_LOG_LEVEL` set
  before TensorFlow is imported hides those logged after TensorFlow has set absl's
  minimum level (3 hides cuInit, the CPU-feature notice and the oneDNN data-type
  errors), but not those logged by static initializers while its two shared libraries
  load: absl is not initialized yet ("WARNING: All log messages before
  absl::InitializeLog() is called are written to STDERR"), prints every severity, and
  reads no environment variable (`--minloglevel` and `--stderrthreshold` are flags that
  only a C++ `main` parses). Neither `TF_ENABLE_ONEDNN_OPTS` nor `CUDA_VISIBLE_DEVICES`
  removes them. TFLite's runtime prints `INFO: Created TensorFlow Lite XNNPACK delegate
  for CPU.` and the quantizer `fully_quantize: 0, inference_type: 6, ...`, with no
  switch at all. So the only complete control is the file descriptor: `quiet_cli`
  points descriptor 2 at a pipe read by a small filter process that drops those lines
  (`NATIVE_LOG`) and passes everything else on; the Python `sys.stderr` keeps writing to
  the terminal directly, so the order of the project's own lines does not change. The
  filter is a process, not a thread, so that a fatal `F0000 ... Check failed` line and
  whatever native code prints before an abort still reach the terminal.
- Python warnings attributed to dependencies (the deprecated `tf.lite.Interpreter`,
  NumPy or protobuf deprecations) are ignored; the project's own are kept. Warnings
  chosen with `python -W` or `PYTHONWARNINGS` are left alone.
- The `tensorflow` logger (`WARNING:tensorflow:From ...: load (from ...) is deprecated`),
  absl's and tf2onnx's print errors only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import warnings

VERBOSE_ENV = "VAE_TF_VERBOSE"

# The lines the filter drops: absl's (TensorFlow C++) log lines of severity I, W and E
# (F, fatal, is kept), absl's note that it is not initialized, the continuation line of
# the CPU-feature notice, TFLite's runtime INFO lines and the quantizer's summary.
NATIVE_LOG = (
    r"[IWE]\d{4} [0-9:.]+ +\d+ [^ ]+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: "
    r"|INFO: "
    r"|fully_quantize: \d"
)

# The filter process: reads lines from its stdin, writes the others to its stdout.
_FILTER = r"""
import os, re
drop = re.compile(rb"(?:%s)")
def write(data):
    while data:
        data = data[os.write(1, data):]
rest = b""
while True:
    data = os.read(0, 65536)
    if not data:
        break
    *lines, rest = (rest + data).split(b"\n")
    write(b"".join(line + b"\n" for line in lines if not drop.match(line)))
if rest and not drop.match(rest):
    write(rest)
""" % NATIVE_LOG

# Loggers of dependencies that print warnings and chatter through Python's logging.
_LOGGERS = ("tensorflow", "absl", "tf2onnx", "onnx", "h5py")


def verbose_from_env(environ=os.environ) -> bool:
    """True when `VAE_TF_VERBOSE` is set to something other than "", "0", "false", "no"."""
    return environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


@contextlib.contextmanager
def quiet_cli(verbose: bool, *, native: bool = True):
    """Everything of a `vae-tf` command that runs inside it is quiet unless `verbose`.

    Quiet: `TF_CPP_MIN_LOG_LEVEL=3` unless the environment sets it, dependencies'
    Python warnings ignored, their loggers at ERROR, and, with `native`, native lines on
    file descriptor 2 filtered (`_filtered_fd2`). Enter it before TensorFlow is imported:
    its static initializers log while it loads. The warning filters and the logger levels
    are put back on exit, and descriptor 2 is restored once the filter has passed on
    everything written to it.
    """
    if verbose:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    levels = {name: logging.getLogger(name).level for name in _LOGGERS}
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        if not sys.warnoptions:
            # Attributed to any module but the project's own (vae_tf, vae_tf.export, and
            # vae_tf.cli run as `python -m vae_tf.cli`).
            warnings.filterwarnings("ignore", module=r"(?!(vae_tf|__main__)(\.|$))")
        for name in _LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        if native:
            stack.enter_context(_filtered_fd2())
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def _fd2_stream(fd: int, like) -> io.TextIOWrapper:
    return io.TextIOWrapper(
        io.FileIO(fd, "w", closefd=False), encoding=getattr(like, "encoding", None) or "utf-8",
        errors=getattr(like, "errors", None) or "backslashreplace", line_buffering=True, write_through=True,
    )


@contextlib.contextmanager
def _filtered_fd2():
    """File descriptor 2 -> a pipe -> the filter process (`_FILTER`) -> the real stderr.

    `sys.stderr`, when it is the process's own, is pointed at the real stderr (a copy of
    descriptor 2), so Python's output keeps its order; under a test's capture it is left
    as it is. Does nothing where there is no descriptor 2 to filter or no process to
    start (not POSIX).
    """
    if os.name != "posix":
        yield
        return
    try:
        real = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    proc = None
    try:
        read, write = os.pipe()
        try:
            # A session of its own: Ctrl-C in a terminal reaches the command, not the
            # filter, which ends when every copy of the pipe's write end is closed.
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _FILTER], stdin=read, stdout=real, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError:
            os.close(write)
            proc = None
        finally:
            os.close(read)
        if proc is None:
            yield
            return
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(write, 2)
        os.close(write)
        stderr = sys.stderr
        own = stderr is sys.__stderr__ and _fileno(stderr) == 2
        if own:
            sys.stderr = _fd2_stream(real, stderr)
        try:
            yield
        finally:
            if own:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                sys.stderr = stderr
            with contextlib.suppress(Exception):
                stderr.flush()
            os.dup2(real, 2)  # closes the pipe's write end: the filter reads to its end
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # a child process of the command holds a copy
                pass
    finally:
        os.close(real)


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
