"""Runs every SignatureDef of a SavedModel the way TF Serving does: a TF1 session
(`tf.compat.v1`), `loader.load` with tag `serve`, each signature fed and fetched by the
tensor names its SignatureDef gives.

Uses nothing but TensorFlow and numpy, so it also runs under another TensorFlow (the
TF Serving check runs it with tensorflow-cpu 2.20 in a separate virtualenv):

    python check_serving.py SAVED_MODEL_DIR INPUTS.npz OUTPUTS.npz

INPUTS.npz holds arrays named "<signature>/<input>"; OUTPUTS.npz receives
"<signature>/<output>" for every signature whose inputs are all given. A JSON summary
(TensorFlow version, signatures, output shapes) is printed on the last line.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def signature_specs(saved_model_dir: str, tag: str = "serve") -> dict:
    """{signature: {"inputs": {name: {"tensor", "dtype", "shape"}}, "outputs": {...}}}
    read from the SavedModel's MetaGraphDef."""
    import tensorflow as tf

    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, [tag], saved_model_dir)
    return _specs(meta_graph)


def _specs(meta_graph) -> dict:
    import tensorflow as tf

    def info(tensor_info):
        shape = None if tensor_info.tensor_shape.unknown_rank else [int(d.size) for d in tensor_info.tensor_shape.dim]
        return {"tensor": tensor_info.name, "dtype": tf.dtypes.as_dtype(tensor_info.dtype).name, "shape": shape}

    return {
        key: {
            "inputs": {name: info(t) for name, t in sorted(sig.inputs.items())},
            "outputs": {name: info(t) for name, t in sorted(sig.outputs.items())},
        }
        for key, sig in sorted(meta_graph.signature_def.items())
        if not key.startswith("__")
    }


def run_signatures(saved_model_dir: str, inputs: dict, tag: str = "serve") -> tuple[dict, dict]:
    """Runs each signature whose inputs are all in `inputs` ({"sig/name": array}).

    Returns (outputs {"sig/name": array}, specs)."""
    import tensorflow as tf

    graph = tf.Graph()
    outputs = {}
    with tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, [tag], saved_model_dir)
        specs = _specs(meta_graph)
        for key, spec in specs.items():
            feed_names = {name: f"{key}/{name}" for name in spec["inputs"]}
            if not all(v in inputs for v in feed_names.values()):
                continue
            feed = {spec["inputs"][name]["tensor"]: inputs[k] for name, k in feed_names.items()}
            fetch = {name: o["tensor"] for name, o in spec["outputs"].items()}
            for name, value in session.run(fetch, feed_dict=feed).items():
                outputs[f"{key}/{name}"] = value
    return outputs, specs


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    import tensorflow as tf

    saved_model_dir, inputs_path, outputs_path = argv
    with np.load(inputs_path) as data:
        inputs = {k: data[k] for k in data.files}
    outputs, specs = run_signatures(saved_model_dir, inputs)
    np.savez(outputs_path, **outputs)
    summary = {
        "tensorflow": tf.__version__,
        "signatures": sorted(specs),
        "outputs": {k: list(v.shape) for k, v in sorted(outputs.items())},
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
