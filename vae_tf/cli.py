"""`vae-tf`: train, evaluate, sample, reconstruct, report and export VAEs.

Thin argument parsing over the library: every subcommand calls a function of
`vae_tf` (or `vae_tf.export`). User errors (`vae_tf.config.UserError` and its
subclasses) print one line, `vae-tf: error: ...`, and exit with status 2; `--debug`
shows the traceback instead. Any other exception is a bug: its traceback, then a line
asking to report it, and status 1. Ctrl-C (SIGINT) and SIGTERM print one line and exit
with 130 and 143 (`vae_tf.interrupts`); `train` then says how to resume.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

from vae_tf import __version__

DATA_HELP = "dataset SPEC: bundled | tfds:NAME | idx:DIR | npz:FILE | images:DIR"
BUG_REPORT = (
    "vae-tf: internal error (a bug): please report it on the vae-tf issue tracker, "
    "with the command and the traceback above."
)
VERBOSE_HELP = (
    "also show what TensorFlow and the other libraries print (C++ log lines, deprecation warnings); "
    "the same as the environment variable VAE_TF_VERBOSE=1"
)

DESCRIPTION = """\
Variational autoencoders on images (MNIST-like), with TFP distribution layers,
trained with model.fit under tf.distribute, exported to SavedModel, TFLite and ONNX.

command line at a glance:
  vae-tf train --data SPEC --out RUN_DIR [--preset NAME] [--config FILE] [--epochs N]
               [--architecture mlp|conv|resnet] [--likelihood bernoulli|gaussian|continuous_bernoulli|logistic_mixture]
               [--prior normal|mog|vamp] [--latent-layers 32,16] [--conditional] [--image-size H,W]
               [--channels 1|3] [--resume]
  vae-tf evaluate RUN_DIR --split test --iwae-samples 1000 [--ood] [--json]
  vae-tf sample RUN_DIR --num 64 --out samples.png [--digit 7 | --label cat]
  vae-tf reconstruct RUN_DIR --out recon.png
  vae-tf report RUN_DIR
  vae-tf export RUN_DIR --out DIR
  vae-tf explore DIR [--port P] [--open]
"""

# The examples that end `vae-tf --help` and `vae-tf COMMAND --help` ("" is the top level):
# (command line, comment). Each is a command line of README.md or docs/*.md, verbatim
# (tests/test_docs.py checks it, and that it parses).
EXAMPLES = {
    "": [
        ("vae-tf train --data bundled --out runs/mnist", "about 1 minute on 2 CPU cores"),
        ("vae-tf export runs/mnist --out runs/mnist/export", "SavedModel, TFLite and ONNX"),
        ("vae-tf explore saved_models/mnist_vae", "decode in the browser"),
    ],
    "train": [
        ("vae-tf train --data bundled --out runs/mnist", "the default: about 1 minute on 2 CPU cores"),
        ("vae-tf train --data bundled --preset best --out runs/best", "500 epochs on a wider MLP, digits moved"),
        ("vae-tf train --data bundled --conditional --out runs/cvae", "choose the digit when sampling"),
        ("vae-tf train --resume --out runs/mnist", "continue an interrupted run"),
    ],
    "evaluate": [
        ("vae-tf evaluate runs/mnist --split test --iwae-samples 1000", None),
        ("vae-tf evaluate runs/mnist --split test --iwae-samples 1000 --ood --ood-data tfds:fashion_mnist --json", None),
        ("vae-tf evaluate runs/pictures --split test", "nats and bits per dimension"),
    ],
    "sample": [
        ("vae-tf sample runs/mnist --num 64 --out samples.png", None),
        ("vae-tf sample runs/cvae --digit 7 --num 16 --out sevens.png", "a conditional run"),
        ("vae-tf sample --model saved_models/mnist_vae --num 64 --out samples.png", "an exported model"),
    ],
    "reconstruct": [
        ("vae-tf reconstruct runs/mnist --out recon.png", None),
        ("vae-tf reconstruct runs/mnist --split validation --num 32 --out recon_validation.png", None),
    ],
    "report": [
        ("vae-tf report runs/mnist", "writes runs/mnist/index.html"),
        ("vae-tf report runs/mnist --iwae-samples 200", None),
    ],
    "export": [
        ("vae-tf export runs/mnist --out runs/mnist/export", None),
        ("vae-tf export runs/mnist --out saved_models/mnist_vae", None),
        ("vae-tf export runs/mnist --out saved_models/mnist_vae --explorer-only", "add explorer.json only"),
    ],
    "explore": [
        ("vae-tf explore saved_models/mnist_vae", None),
        ("vae-tf explore runs/mnist/export --port 0 --open", "any free port, in the default browser"),
    ],
}


def _epilog(command: str) -> str:
    lines = EXAMPLES[command]
    width = max(len(line) for line, note in lines if note) if any(note for _, note in lines) else 0
    text = "examples:\n" + "\n".join(
        f"  {line:<{width}}   # {note}" if note else f"  {line}" for line, note in lines
    )
    if not command:
        text += "\n\n`vae-tf COMMAND --help` lists every flag of COMMAND, and examples."
    return text


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter, except that a text with line breaks (the examples, the
    overview of `vae-tf --help`) is printed as written; one-paragraph descriptions wrap."""

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return super()._fill_text(text, width, indent)
        return argparse.HelpFormatter._fill_text(self, text, width, indent)


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (defaults: the preset, then --config, then these flags)")
    g.add_argument("--architecture", choices=("mlp", "conv", "resnet"), help="encoder/decoder networks")
    g.add_argument("--latent-dim", type=int, help="size of the latent z")
    g.add_argument("--latent-layers", type=_int_list, metavar="D1,D2,...",
                   help="a hierarchy of stochastic layers, bottom (next to x) first, e.g. 32,16")
    g.add_argument("--hidden-units", type=_int_list, help="MLP widths, e.g. 512,256")
    g.add_argument("--conv-filters", type=_int_list, help="conv stage filters, e.g. 32,64")
    g.add_argument("--dense-units", type=int, help="dense layer between convolutions and latent")
    g.add_argument("--likelihood", choices=("bernoulli", "gaussian", "continuous_bernoulli", "logistic_mixture"),
                   help="p(x|z); logistic_mixture (8-bit colour pixels) needs --preprocessing continuous")
    g.add_argument("--likelihood-components", type=int, help="mixture components per pixel of logistic_mixture")
    g.add_argument("--gaussian-sigma", type=float, help="pixel stddev of the Gaussian likelihood")
    g.add_argument("--posterior", choices=("diag", "full", "iaf"), help="q(z|x): diagonal, full covariance or IAF flow")
    g.add_argument("--flow-layers", type=int, help="IAF steps")
    g.add_argument("--prior", choices=("normal", "mog", "vamp"),
                   help="p(z): N(0,I), learned mixture of Gaussians (default; one per class with --conditional) or VampPrior")
    g.add_argument("--prior-components", type=int, help="mixture components / pseudo-inputs")
    g.add_argument("--conditional", action="store_true", default=None, help="condition on the label (choose the digit); unless set, also --latent-layers 32,16 --beta 2 "
                   "--iwae-samples 10 --prior-components 16 --augment-shift 0 --batch-size 128 --augment-copies 4")
    g.add_argument("--conditioning", choices=("input", "every_layer"),
                   help="where the decoder reads the label: its input, or every dense layer")
    g.add_argument("--beta", type=float, help="weight of the KL term (beta-VAE)")
    g.add_argument("--kl-warmup-steps", type=int, help="ramp the KL weight from 0 over this many steps")
    g.add_argument("--free-bits", type=float, help="minimum KL charged per image, nats")
    g.add_argument("--iwae-samples", type=int, help="k > 1 trains on the IWAE bound with k samples")
    g.add_argument("--iwae-gradient", choices=("auto", "dreg", "reparam"),
                   help="the encoder's IWAE gradient: doubly reparameterized (dreg) or plain (reparam); "
                   "auto (default): dreg for one diagonal Gaussian latent layer with a normal or mog prior")
    g.add_argument("--dropout", type=float, help="encoder dropout rate")


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--preprocessing", choices=("dynamic", "static", "continuous"), help="binarization of pixels")
    g.add_argument("--epochs", type=int, help="passes over the training split")
    g.add_argument("--batch-size", type=int, help="global batch size")
    g.add_argument("--learning-rate", type=float, help="peak Adam learning rate")
    g.add_argument("--lr-schedule", choices=("constant", "cosine"), help="learning-rate schedule")
    g.add_argument("--augment-shift", type=int, metavar="N",
                   help="move each training image by a random offset of up to N pixels (default 1; 0: none)")
    g.add_argument("--augment-copies", type=int, metavar="R",
                   help="each training image R times per batch, each copy binarized and moved on its own: R times "
                   "the compute per step, the same steps per epoch (default 6; 1: once)")
    g.add_argument("--validation-fraction", type=float,
                   help="share held out for validation where the source has none (0: train on all but the test slice)")
    g.add_argument("--test-fraction", type=float, help="share held out for testing where the source has no test split")
    g.add_argument("--seed", type=int, help="seed of initialization, shuffling, binarization and noise")
    g.add_argument("--mixed-precision", action="store_true", default=None, help="mixed precision: float16 on a GPU, bfloat16 on a CPU")
    g.add_argument("--jit", dest="jit_compile", action="store_true", default=None,
                   help="XLA-compile the step (default: on a GPU only; on a CPU it pays off in long runs of small MLPs)")
    g.add_argument("--no-jit", dest="jit_compile", action="store_false", default=None, help="do not XLA-compile the step")
    g.add_argument("--onednn", dest="onednn", action="store_true", default=None,
                   help="oneDNN CPU kernels on (TensorFlow's default; --preset mlp turns them off; convolutions "
                   "need them); TF_ENABLE_ONEDNN_OPTS in the environment wins")
    g.add_argument("--no-onednn", dest="onednn", action="store_false", default=None, help="oneDNN CPU kernels off")
    g.add_argument("--deterministic", action="store_true", default=None, help="bit-identical reruns (TF op determinism)")
    g.add_argument("--checkpoint-every", metavar="N|Ns",
                   help="write backup/ (for --resume) and checkpoints/last every N epochs, or at the first epoch end "
                   "N seconds after the last checkpoint (default 30s); Ctrl-C, SIGTERM, errors and NaN write the "
                   "last completed epoch, a SIGKILL loses the epochs since the last checkpoint")
    g.add_argument("--data-dir", help="TFDS data directory")
    g.add_argument("--manual-dir", help="TFDS manual download directory")
    g = p.add_argument_group("images (any source)")
    g.add_argument("--image-size", type=_image_size, metavar="H,W",
                   help="resize every image to H x W pixels (bilinear, antialiased; default: keep the size)")
    g.add_argument("--channels", type=int, choices=(1, 3), help="1 (grey) or 3 (RGB) (default: grey when every image is)")
    g.add_argument("--skip-bad-images", action="store_true", default=None,
                   help="images:DIR: skip unreadable files (counted) instead of stopping at the first")
    g.add_argument("--cache", metavar="auto|memory|none|file:PATH",
                   help="images:DIR and tfds: keep decoded pixels in memory, stream them every epoch, or "
                   "cache them in files (default auto: memory up to 1 GiB of pixels)")


_MODEL_FLAGS = (
    "architecture", "latent_dim", "latent_layers", "hidden_units", "conv_filters", "dense_units", "likelihood", "likelihood_components",
    "gaussian_sigma",
    "posterior", "flow_layers", "prior", "prior_components", "conditional", "conditioning", "beta", "kl_warmup_steps",
    "free_bits", "iwae_samples", "iwae_gradient", "dropout",
)
_TRAIN_FLAGS = (
    "data", "preprocessing", "epochs", "batch_size", "learning_rate", "lr_schedule", "augment_shift", "augment_copies",
    "validation_fraction", "test_fraction", "seed", "mixed_precision", "jit_compile", "onednn", "deterministic",
    "checkpoint_every", "data_dir", "manual_dir", "image_size", "channels", "skip_bad_images", "cache",
)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 512,256, got {text!r}") from None


def _image_size(text: str) -> tuple[int, int]:
    try:
        size = tuple(int(v) for v in text.split(","))
    except ValueError:
        size = ()
    if len(size) != 2 or min(size) <= 0:
        raise argparse.ArgumentTypeError(f"expected H,W (two positive integers such as 64,64), got {text!r}")
    return size


def _tflite_batch(text: str) -> int | None | str:
    if text in ("auto", "any"):
        return None if text == "any" else text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected auto, any or a positive batch size, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vae-tf", description=DESCRIPTION, epilog=_epilog(""), formatter_class=_HelpFormatter
    )
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    parser.add_argument("--version", action="version", version=f"vae-tf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", epilog=_epilog("train"), formatter_class=_HelpFormatter,
                       help="train a VAE and write its run directory",
                       description="Train a VAE with model.fit under the tf.distribute strategy that fits the "
                       "machine (several GPUs: MirroredStrategy; TF_CONFIG with several workers: "
                       "MultiWorkerMirroredStrategy; else one device). Writes config.json, weights/, "
                       "checkpoints/, history.json, TensorBoard logs/, samples.png and reconstructions.png.")
    p.add_argument("--data", help=f"{DATA_HELP} (default: bundled)")
    p.add_argument("--out", required=True, help="run directory to create")
    p.add_argument("--config", help="JSON file with a RunConfig ({'model': {...}, 'train': {...}})")
    p.add_argument("--preset", help="named configuration: default, best, mlp, conv-small")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out from its last epoch")
    p.add_argument("--no-pictures", action="store_true", help="skip samples.png and reconstructions.png")
    _add_model_flags(p)
    _add_train_flags(p)

    p = sub.add_parser("evaluate", epilog=_epilog("evaluate"), formatter_class=_HelpFormatter,
                       help="test negative ELBO and IWAE NLL in nats (and bits/dim)",
                       description="Negative ELBO and importance-weighted NLL (nats per image, with standard "
                       "errors) of a trained model on a split of any data source, and in bits per dimension "
                       "for a likelihood of discrete pixels (bernoulli on binarized pixels, logistic_mixture "
                       "on 8-bit pixels).")
    p.add_argument("run_dir")
    p.add_argument("--data", help=f"{DATA_HELP} (default: the run's training data)")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"), help="split to evaluate (default test)")
    p.add_argument("--iwae-samples", type=int, default=1000, help="k of the IWAE estimate (default 1000)")
    p.add_argument("--batch-size", type=int, default=100, help="images per evaluation call (default 100)")
    p.add_argument("--max-images", type=int, help="evaluate only the first N images")
    p.add_argument("--ood", action="store_true", help="add the out-of-distribution report (noise, inverted digits)")
    p.add_argument("--ood-data", help="another dataset SPEC for the OOD report")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent samples and the OOD noise (default 0)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")

    p = sub.add_parser("sample", epilog=_epilog("sample"), formatter_class=_HelpFormatter,
                       help="a PNG grid of images drawn from the prior")
    p.add_argument("run_dir", nargs="?", help="run directory (or use --model)")
    p.add_argument("--model", help="an exported model directory, e.g. saved_models/mnist_vae")
    p.add_argument("--num", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--digit", type=int, help="class number to draw (conditional models)")
    p.add_argument("--label", help="class to draw by name (a class folder's name) or number (conditional models)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latents (default 0)")
    p.add_argument("--out", required=True, help="PNG file to write")

    p = sub.add_parser("reconstruct", epilog=_epilog("reconstruct"), formatter_class=_HelpFormatter,
                       help="a PNG of inputs beside their reconstructions")
    p.add_argument("run_dir")
    p.add_argument("--data", help=f"{DATA_HELP} (default: the run's training data)")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"),
                   help="split the inputs come from (default test)")
    p.add_argument("--num", type=int, default=16, help="number of inputs (default 16)")
    p.add_argument("--out", required=True, help="PNG file to write")

    p = sub.add_parser("report", epilog=_epilog("report"), formatter_class=_HelpFormatter,
                       help="all pictures of a run, with an index.html")
    p.add_argument("run_dir")
    p.add_argument("--data", help=f"{DATA_HELP} (default: the run's training data)")
    p.add_argument("--iwae-samples", type=int, default=200, help="k for the OOD histogram's log p(x)")

    p = sub.add_parser("export", epilog=_epilog("export"), formatter_class=_HelpFormatter,
                       help="SavedModel (TF Serving), TFLite and ONNX decoders, verified",
                       description="Writes DIR/serving/<version>/ (SavedModel), DIR/decoder_float32.tflite, "
                       "decoder_float16.tflite, decoder_dynamic_int8.tflite, decoder_int8.tflite, "
                       "DIR/decoder.onnx and DIR/manifest.json; every artifact is checked against the TF "
                       "decoder and the export fails past its tolerance.")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="output directory, e.g. saved_models/mnist_vae")
    p.add_argument("--version", type=int, help="serving version number (default: next free one)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--tflite-batch", type=_tflite_batch, default="auto", metavar="auto|any|N",
                   help="batch size fixed in the TFLite decoders: auto (default: any batch for an MLP "
                   "decoder, 1 for a convolutional one, which LiteRT runs 1.7x faster at batch 1 "
                   "than with an open batch), any, or N")
    p.add_argument("--explorer-only", action="store_true",
                   help="only add explorer.json (the in-browser explorer's metadata) to the existing export "
                   "of RUN_DIR in --out, e.g. one made before the explorer existed")

    p = sub.add_parser("explore", epilog=_epilog("explore"), formatter_class=_HelpFormatter,
                       help="the exported decoders in the browser: a latent explorer on 127.0.0.1",
                       description="Serves the latent explorer (the page built from web/) and EXPORT_DIR's decoder "
                       "files on 127.0.0.1 and prints the URL. The page decodes in the browser with ONNX "
                       "Runtime Web and LiteRT.js. Build the page once with "
                       "`npm ci --prefix web && npm run --prefix web build` in the vae-tf repository.")
    p.add_argument("export_dir", help="an exported model directory, e.g. saved_models/mnist_vae")
    p.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000; 0: any free port)")
    p.add_argument("--open", action="store_true", help="open the page in the default web browser")
    p.add_argument("--web", metavar="DIR", help="the built page (default: web/dist of the vae-tf repository)")
    p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help="log every request")
    for p in sub.choices.values():  # --verbose after the command too (`vae-tf train --verbose ...`)
        if "--verbose" not in p._option_string_actions:
            p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    return parser


def _run_config_from_args(args):
    from vae_tf.config import PRESETS, RunConfig, apply_preset, with_conditional_defaults, with_conditional_train_defaults

    preset = apply_preset(args.preset or "default")
    model, train = preset.model, preset.train
    if args.config:
        given = RunConfig.read_file(args.config)  # read once: the keys it names, then the checked config
        # Each part checked on its own; the combination once the flags apply (a partial
        # file may need a flag, e.g. likelihood logistic_mixture and --preprocessing continuous).
        file_model, file_train = RunConfig.parts_from_dict(given)
        # Only the keys the file names override the preset (a partial file keeps the rest).
        model = model.replace(**{k: getattr(file_model, k) for k in given.get("model", {})})
        train = train.replace(**{k: getattr(file_train, k) for k in given.get("train", {})})
    model_changes = {k: getattr(args, k) for k in _MODEL_FLAGS if getattr(args, k, None) is not None}
    explicit = set(PRESETS[args.preset or "default"].get("model", {})) | set(model_changes)
    if args.config:
        explicit |= set(given.get("model", {}))
    layers = model_changes.get("latent_layers")
    if layers and "latent_dim" in model_changes and model_changes["latent_dim"] != sum(layers):
        from vae_tf.config import UsageError

        raise UsageError(
            f"--latent-dim {model_changes['latent_dim']} disagrees with --latent-layers "
            f"{','.join(map(str, layers))} (a hierarchy's code has {sum(layers)} dimensions); leave out --latent-dim."
        )
    train_changes = {k: getattr(args, k) for k in _TRAIN_FLAGS if getattr(args, k, None) is not None}
    model = with_conditional_defaults(model.replace(**model_changes), explicit)
    explicit_train = set(PRESETS[args.preset or "default"].get("train", {})) | set(train_changes)
    if args.config:
        explicit_train |= set(given.get("train", {}))
    train = with_conditional_train_defaults(train.replace(**train_changes), model, explicit_train)
    return RunConfig(model=model, train=train)


def _check_positive_flags(args, *names: str) -> None:
    """UsageError naming the first of the integer flags `names` that is given and <= 0."""
    from vae_tf.config import UsageError

    for name in names:
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}.")


def _eval_split(run_config, spec, split):
    """Evaluation images and labels of one split, and a note when "test" is a held-out slice."""
    from vae_tf.evaluation import eval_split

    images, labels, splits = eval_split(run_config, spec, split)
    note = None
    if split == "test" and not splits.has_test_split:
        t = run_config.train
        note = (
            f"{spec or t.data} has no test split: using its held-out test slice of {len(images)} images "
            f"(test_fraction {t.test_fraction}, split_seed {t.split_seed})"
        )
    return images, labels, note


def _train_summary(args, history: dict, seconds: float) -> list[str]:
    """The lines that end `vae-tf train`: what was trained, in how long, how well, where
    the files are and what to run next."""
    import shlex

    from vae_tf.progress import format_seconds

    epochs = history["history"].get("epoch", [])
    resumed = history.get("resumed") or []
    what = (f"trained epochs {resumed[-1]['at_epoch']}-{len(epochs)} of {len(epochs)} (resumed)" if resumed
            else f"trained {len(epochs)} epoch{'s' if len(epochs) != 1 else ''}")
    speed = f", {history['images_per_second']:,.0f} images/s" if history.get("images_per_second") else ""
    val = history["history"].get("val_elbo")
    if val:
        best = max(range(len(val)), key=lambda i: val[i])
        best_epoch = int(epochs[best]) + 1 if len(epochs) == len(val) else best + 1
        quality = f"; validation -ELBO {-val[-1]:.2f} nats (best {-val[best]:.2f}, epoch {best_epoch})"
    else:
        quality = " (no validation split)"
    out = shlex.quote(args.out)
    files = "config.json, weights/, history.csv, TensorBoard logs/"
    if not args.no_pictures:
        files += ", samples.png, reconstructions.png"
    return [
        f"{what} in {format_seconds(seconds)}{speed}{quality}",
        f"run directory: {args.out} ({files})",
        f"next: vae-tf evaluate {out}",
        f"      vae-tf export {out} --out {shlex.quote(args.out.rstrip('/') + '/export')}",
    ]


def cmd_train(args) -> int:
    import time

    from vae_tf.runtime import set_onednn_before_import

    run_config = _run_config_from_args(args)
    # Before TensorFlow is imported (it reads the switch once); a resumed run's stored
    # configuration is the one `train` uses.
    stored = os.path.join(args.out, "config.json")
    if args.resume and os.path.isfile(stored):
        from vae_tf.config import RunConfig, UserError

        try:
            run_config_for_runtime = RunConfig.load(stored)
        except UserError:
            run_config_for_runtime = run_config  # `train` reports the broken file
    else:
        run_config_for_runtime = run_config
    set_onednn_before_import(run_config_for_runtime.train.onednn)

    from vae_tf import plots
    from vae_tf.training import train

    start = time.perf_counter()
    result = train(run_config, args.out, resume=args.resume)
    seconds = time.perf_counter() - start
    args.trained = True  # an interrupt from here on stops the pictures only
    model, history = result.model, result.history
    if not args.no_pictures:
        cfg = model.config
        plots.save_prior_samples(model, os.path.join(args.out, "samples.png"))
        splits = result.datasets.splits
        # Held-out images: the validation split, or the test slice when there is none
        # (a picture chooses nothing).
        held = splits.validation if splits.validation.count else splits.test
        x, y = held.head(16)
        y = y if cfg.conditional else None
        plots.save_reconstructions(
            x, model.reconstruct(x, y).numpy(), os.path.join(args.out, "reconstructions.png"),
            "held-out images (input) and their reconstructions",
        )
    print("\n".join(_train_summary(args, history, seconds)))
    return 0


def cmd_evaluate(args) -> int:
    from vae_tf.evaluation import evaluate_likelihood
    from vae_tf.training import load_run

    _check_positive_flags(args, "iwae_samples", "batch_size", "max_images")
    model, run_config = load_run(args.run_dir)
    images, labels, note = _eval_split(run_config, args.data, args.split)
    if args.max_images:
        images, labels = images[: args.max_images], labels[: args.max_images]
    if note:
        print(f"note: {note}", file=sys.stderr)
    result = evaluate_likelihood(
        model, images, labels, num_samples=args.iwae_samples, batch_size=args.batch_size, seed=args.seed,
        progress=not args.json,
    )
    result.update(split=args.split, data=args.data or run_config.train.data)
    if args.ood or args.ood_data:
        from vae_tf.evaluation import ood_report

        other = None
        if args.ood_data:
            other_images, _, _ = _eval_split(run_config, args.ood_data, args.split)
            other = {args.ood_data: other_images[: len(images)]}
        result["ood"] = ood_report(model, images, labels, other=other, num_samples=args.iwae_samples, seed=args.seed,
                                   progress=not args.json)
    if not args.json:
        print(
            f"{result['data']} [{args.split}], {result['num_images']} images: "
            f"-ELBO {result['neg_elbo']:.2f} ± {result['neg_elbo_stderr']:.2f} nats, "
            f"IWAE NLL (k={args.iwae_samples}) {result['iwae_nll']:.2f} ± {result['iwae_nll_stderr']:.2f} nats"
        )
        if result["bits_per_dim_defined"]:
            print(
                f"  bits/dim: -ELBO {result['neg_elbo_bits_per_dim']:.4f} ± {result['neg_elbo_bits_per_dim_stderr']:.4f}, "
                f"IWAE NLL {result['iwae_bits_per_dim']:.4f} ± {result['iwae_bits_per_dim_stderr']:.4f} "
                f"({result['bits_per_dim_note']})"
            )
        else:
            print(f"  bits/dim: not defined: {result['bits_per_dim_note']}")
        for name, r in result.get("ood", {}).get("sources", {}).items():
            print(f"  OOD {name}: mean log p(x) {r['mean_log_prob']:.1f} nats, AUROC {r['auroc']:.3f}")
    print(json.dumps(result))
    return 0


def cmd_sample(args) -> int:
    import numpy as np

    from vae_tf import plots
    from vae_tf.config import UsageError

    _check_positive_flags(args, "num")
    if (args.run_dir is None) == (args.model is None):
        raise UsageError("give either a RUN_DIR or --model EXPORTED_DIR.")
    if args.label is not None and args.digit is not None:
        raise UsageError("give --digit or --label, not both.")
    class_name = None
    if args.label is not None:
        names = None
        if args.run_dir:
            from vae_tf.config import RunConfig

            names = RunConfig.load(os.path.join(args.run_dir, "config.json")).model.class_names
        if names and args.label in names:
            args.digit, class_name = names.index(args.label), args.label
        elif args.label.lstrip("-").isdigit():
            args.digit = int(args.label)
        else:
            known = f"; its classes are {', '.join(names)}" if names else " (the model has no class names: pass a number)"
            raise UsageError(f"--label {args.label!r} is not a class of this model{known}.")
    if args.model:
        from vae_tf.export import load_exported

        images = load_exported(args.model).sample(args.num, seed=args.seed, label=args.digit)
        conditional = args.digit is not None
    else:
        from vae_tf.training import load

        model = load(args.run_dir)
        conditional = model.config.conditional
        if args.digit is not None and not conditional:
            raise UsageError("--digit needs a conditional model (train with --conditional).")
        label = None
        if conditional:
            label = args.digit if args.digit is not None else np.arange(args.num) % model.config.num_classes
            if not 0 <= np.min(label) <= np.max(label) < model.config.num_classes:
                raise UsageError(f"--digit must be in [0, {model.config.num_classes}), got {args.digit}.")
        images = model.sample(args.num, seed=args.seed, label=label).numpy()
    if args.digit is not None and class_name is None and not args.model:
        names = model.config.class_names
        class_name = names[args.digit] if names else None
    what = f"class {class_name!r}" if class_name else f"digit {args.digit}"
    title = f"{args.num} samples" + (f" of {what}" if args.digit is not None else "")
    plots.save_grid(np.asarray(images), args.out, title)
    print(f"wrote {args.out}")
    return 0


def cmd_reconstruct(args) -> int:
    from vae_tf import plots
    from vae_tf.training import load_run

    _check_positive_flags(args, "num")
    model, run_config = load_run(args.run_dir)
    images, labels, _ = _eval_split(run_config, args.data, args.split)
    x, y = images[: args.num], labels[: args.num]
    recon = model.reconstruct(x, y if model.config.conditional else None).numpy()
    plots.save_reconstructions(x, recon, args.out, "inputs and their reconstructions")
    print(f"wrote {args.out}")
    return 0


def cmd_report(args) -> int:
    from vae_tf.report import write_report

    _check_positive_flags(args, "iwae_samples")
    index = write_report(args.run_dir, data=args.data, num_samples=args.iwae_samples)
    print(f"wrote {index}")
    return 0


def cmd_export(args) -> int:
    from vae_tf.export import export_run

    if args.explorer_only:
        from vae_tf.export import write_explorer

        entry = write_explorer(args.run_dir, args.out)
        print(f"  {entry['path']}: {entry['size_bytes'] / 1024:.0f} KiB")
        print(f"added {entry['path']} to {args.out}")
        return 0
    import logging
    import shlex

    class PrintLine(logging.Handler):  # each artifact as it is verified (export/pipeline.py)
        def emit(self, record):
            print("  " + record.getMessage(), flush=True)

    print(f"exporting {args.run_dir} to {args.out}: SavedModel, TFLite and ONNX decoders, each checked against TF",
          flush=True)
    logger, handler = logging.getLogger("vae_tf.export"), PrintLine(logging.INFO)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        export_run(
            args.run_dir, args.out, version=args.version, overwrite=args.overwrite, opset=args.opset,
            tflite_batch=args.tflite_batch,
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    out = shlex.quote(args.out)
    print(f"exported to {args.out} (manifest.json lists every file)")
    print(f"next: vae-tf explore {out}")
    print(f"      vae-tf sample --model {out} --num 64 --out samples.png")
    return 0


def cmd_explore(args) -> int:
    from vae_tf.explore import serve

    if not 0 <= args.port <= 65535:
        from vae_tf.config import UsageError

        raise UsageError(f"--port must be in [0, 65535], got {args.port}.")
    return serve(args.export_dir, port=args.port, web_dir=args.web, open_browser=args.open, verbose=args.verbose)


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "sample": cmd_sample,
    "reconstruct": cmd_reconstruct,
    "report": cmd_report,
    "export": cmd_export,
    "explore": cmd_explore,
}


def _train_interrupted(args, err: BaseException) -> str:
    """The line for `vae-tf train` stopped by Ctrl-C or SIGTERM: where, and what to do."""
    out = args.out
    resume = f"resume with `vae-tf train --resume --out {out}`"
    state = getattr(err, "training", None)
    if getattr(args, "trained", False) or (state and state["finished"]):
        return (f"vae-tf: interrupted after training finished: {out} holds the trained model "
                "(samples.png and reconstructions.png may be missing; `vae-tf report` draws its pictures).")
    if state is None:  # before `train` wrote anything (config, data, model)
        if args.resume:
            return f"vae-tf: interrupted before training resumed; {out} is as it was: {resume}"
        return f"vae-tf: interrupted before training started; nothing was written to {out}."
    epoch = state["epoch"]
    if state["resumable"]:
        where = ("before the next epoch started" if epoch is None else
                 f"{'after' if state['epoch_completed'] else 'in'} epoch {epoch + 1}")
        return f"vae-tf: interrupted {where}; {resume}"
    where = "before the first epoch" if epoch is None else f"in epoch {epoch + 1}"
    if state["removed"]:
        return (f"vae-tf: interrupted {where}, before any epoch completed: nothing to resume, and what it had "
                f"written to {out} was removed; run the same command to start over.")
    return (f"vae-tf: interrupted {where}, before any epoch completed: nothing to resume; remove {out} "
            "and run the same command to start over.")


def _interrupted(args, err: BaseException) -> str:
    if args.command == "train":
        return _train_interrupted(args, err)
    left = {"export": "; no partial export was left", "report": "; no partial report was left"}
    return f"vae-tf: interrupted{left.get(args.command, '')}."


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from vae_tf.quiet import quiet_cli, verbose_from_env

    # Before TensorFlow is imported: it logs while its libraries load (`vae_tf.quiet`).
    # `explore` imports no TensorFlow, and may start a browser that would hold the filter.
    with quiet_cli(args.verbose or verbose_from_env(), native=args.command != "explore"):
        return _run(args)


def _finish_progress_line() -> None:
    """Ends a progress bar that an error or an interrupt left open (`vae_tf.progress`)."""
    progress = sys.modules.get("vae_tf.progress")  # not imported: no bar was drawn
    if progress is not None:
        progress.finish_line()


def _run(args) -> int:
    from vae_tf import interrupts
    from vae_tf.config import UserError

    # The handlers stay until the message is printed (a second signal is ignored).
    with interrupts.handle_signals():
        try:
            return COMMANDS[args.command](args)
        except UserError as err:
            _finish_progress_line()
            if args.debug:
                raise
            print(f"vae-tf: error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (interrupts.Interrupted)
            _finish_progress_line()
            if args.debug:
                traceback.print_exc()
            print(_interrupted(args, err), file=sys.stderr)
            return interrupts.exit_status(err)
        except Exception as err:  # noqa: BLE001
            _finish_progress_line()
            if isinstance(err, OSError) and err.filename:
                # A file that cannot be read or written (permissions, a full disk): not a bug.
                if args.debug:
                    raise
                print(f"vae-tf: error: {err.strerror or err}: {err.filename}", file=sys.stderr)
                return 2
            # Anything else is a bug: show where, and ask for a report.
            traceback.print_exc()
            print(BUG_REPORT, file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
