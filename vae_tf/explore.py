"""`vae-tf explore EXPORT_DIR`: serves the in-browser explorer (the static page built
from `web/`) and the export's decoder files on 127.0.0.1, with the standard library's
`http.server` only (no TensorFlow is imported).

URL layout: `/` is the built page (`web/dist`), `/model/NAME` the export's
`manifest.json`, `explorer.json` and the decoder files its manifest names; nothing
else of the export directory is served. Before serving, the export and the build are
checked: a missing `manifest.json`, `explorer.json` or `decoder.onnx`, a file whose
sha256 differs from the manifest's, or an incomplete build is an `ExploreError` (the
CLI prints it and exits with status 2); a missing or corrupt TFLite decoder is a
warning (the page offers the other runtimes and says why). The page checks each file's
sha256 again, so a file damaged after the check is reported on the page too.

`vae_tf` never imports the web code: the page is found as built files, by
`find_web_dist`, and its build command is printed when it is missing.
"""

from __future__ import annotations


import http.server
import json
import os
import posixpath
import sys
import urllib.parse

from vae_tf.config import UserError
from vae_tf.fileio import sha256_file

BUILD_COMMAND = "npm ci --prefix web && npm run --prefix web build"
MANIFEST = "manifest.json"
EXPLORER = "explorer.json"
ONNX = "decoder.onnx"
TFLITE = ("decoder_float32.tflite", "decoder_int8.tflite", "decoder_float16.tflite", "decoder_dynamic_int8.tflite")
WEB_DIST_ENV = "VAE_TF_WEB_DIST"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".onnx": "application/octet-stream",
    ".tflite": "application/octet-stream",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}


class ExploreError(UserError):
    """The export or the page's build cannot be served; the message says what to do."""


def _candidates(web_dir: str | None) -> list[str]:
    if web_dir:
        return [web_dir]
    found = []
    if os.environ.get(WEB_DIST_ENV):
        found.append(os.environ[WEB_DIST_ENV])
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found.append(os.path.join(package_root, "web", "dist"))  # a checkout or an editable install
    found.append(os.path.join(os.getcwd(), "web", "dist"))  # run from the checkout after `pip install .`
    return list(dict.fromkeys(os.path.abspath(p) for p in found))


def find_web_dist(web_dir: str | None = None) -> str:
    """The built page: `web_dir`, else $VAE_TF_WEB_DIST, else `web/dist` of the
    repository holding this package, else `web/dist` under the current directory.

    Raises:
        ExploreError: none of them holds a build, with the command that makes one.
    """
    candidates = _candidates(web_dir)
    for path in candidates:
        if os.path.isfile(os.path.join(path, "build.json")):
            return path
    raise ExploreError(
        "the explorer page is not built (looked for build.json in " + ", ".join(candidates) + "). "
        f"Build it in the vae-tf repository with `{BUILD_COMMAND}` (Node.js 18+), then run this again "
        f"from the repository, or pass --web DIR (or set {WEB_DIST_ENV})."
    )


def check_web_dist(dist: str) -> dict:
    """Checks that every file `build.json` lists is in `dist` with its size; returns it."""
    try:
        with open(os.path.join(dist, "build.json")) as f:
            build = json.load(f)
        files = build["files"]
    except (OSError, ValueError, KeyError) as err:
        raise ExploreError(f"{dist}/build.json is unreadable ({err}); rebuild the page with `{BUILD_COMMAND}`.") from None
    problems = []
    for name, entry in files.items():
        path = os.path.join(dist, name)
        if not os.path.isfile(path):
            problems.append(f"{name} is missing")
        elif os.path.getsize(path) != entry["size"]:
            problems.append(f"{name} has {os.path.getsize(path)} bytes, not {entry['size']}")
    if problems:
        parts = sorted({files[p.split(' ')[0]]["part"] for p in problems})
        raise ExploreError(
            f"the explorer build in {dist} is incomplete ({'; '.join(problems[:4])}"
            f"{'; ...' if len(problems) > 4 else ''}): the {', '.join(parts)} part would not load. "
            f"Rebuild it with `{BUILD_COMMAND}`."
        )
    return build


def check_export(export_dir: str) -> tuple[dict, list[str]]:
    """Checks the files the page loads from `export_dir` against its manifest.

    Returns:
        (the manifest, warnings): one warning per TFLite decoder that is missing or
        corrupt (the page offers the others).

    Raises:
        ExploreError: no manifest, no explorer.json, no decoder.onnx, or a corrupt one.
    """
    if not os.path.isdir(export_dir):
        raise ExploreError(f"{export_dir} is not a directory; give an export directory, e.g. saved_models/mnist_vae.")
    path = os.path.join(export_dir, MANIFEST)
    if not os.path.isfile(path):
        raise ExploreError(
            f"{export_dir} is not an exported model: {MANIFEST} is missing; "
            f"create one with `vae-tf export RUN_DIR --out {export_dir}`."
        )
    try:
        with open(path) as f:
            manifest = json.load(f)
        artifacts = manifest["artifacts"]
    except (ValueError, KeyError, TypeError) as err:
        raise ExploreError(f"{path} is not a vae-tf export manifest ({type(err).__name__}: {err}).") from None

    entry = manifest.get("explorer")
    if not entry or not os.path.isfile(os.path.join(export_dir, EXPLORER)):
        raise ExploreError(
            f"{export_dir} has no {EXPLORER} (the explorer's principal directions, examples and prior; "
            "exports made before the explorer lack it): add it with "
            f"`vae-tf export RUN_DIR --out {export_dir} --explorer-only`."
        )
    if sha256_file(os.path.join(export_dir, EXPLORER)) != entry["sha256"]:
        raise ExploreError(f"{export_dir}/{EXPLORER} is corrupt: its sha256 differs from {MANIFEST}'s.")

    if ONNX not in artifacts or not os.path.isfile(os.path.join(export_dir, ONNX)):
        raise ExploreError(
            f"{export_dir} has no {ONNX}, which the explorer decodes with (ONNX Runtime Web); "
            f"export the run again with `vae-tf export RUN_DIR --out {export_dir} --overwrite`."
        )
    if sha256_file(os.path.join(export_dir, ONNX)) != artifacts[ONNX]["sha256"]:
        raise ExploreError(
            f"{export_dir}/{ONNX} is corrupt: its sha256 differs from {MANIFEST}'s; "
            f"export the run again with `vae-tf export RUN_DIR --out {export_dir} --overwrite`."
        )

    warnings = []
    for name in TFLITE:
        if name not in artifacts:
            continue
        file = os.path.join(export_dir, name)
        if not os.path.isfile(file):
            warnings.append(f"{name} is missing: the page will not offer it")
        elif sha256_file(file) != artifacts[name]["sha256"]:
            warnings.append(f"{name} is corrupt (its sha256 differs from {MANIFEST}'s): the page will not offer it")
    return manifest, warnings


def served_model_files(manifest: dict) -> set[str]:
    """The names under /model/: the manifest, explorer.json and the edge decoder files."""
    names = {MANIFEST, EXPLORER}
    names.update(a["path"] for a in manifest["artifacts"].values() if a["path"].endswith((".onnx", ".tflite")))
    return names


def make_handler(dist: str, export_dir: str, model_files: set[str], log=None):
    """The request handler class: the page from `dist`, /model/NAME from `export_dir`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "vae-tf-explore"
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            if log:
                log(format % args)

        def _resolve(self) -> str | None:
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            if path.startswith("/model/"):
                name = path[len("/model/"):]
                return os.path.join(export_dir, name) if name in model_files else None
            rel = posixpath.normpath(path.lstrip("/")) if path != "/" else "index.html"
            if rel.startswith("..") or os.path.isabs(rel) or rel == ".":
                return None
            return os.path.join(dist, *rel.split("/"))

        def _send(self, head_only: bool) -> None:
            path = self._resolve()
            if path is None or not os.path.isfile(path):
                body = b"not found\n"
                self.send_response(404)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head_only:
                    self.wfile.write(body)
                if self.path.startswith("/model/"):
                    print(f"vae-tf explore: 404 {self.path}: not in {export_dir}", file=sys.stderr, flush=True)
                return
            with open(path, "rb") as f:
                data = f.read()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPES.get(os.path.splitext(path)[1], "application/octet-stream"))
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            # Cross-origin isolation: the page's timers are precise to 5 us instead of 100 us.
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
            self.send_header("Cross-Origin-Resource-Policy", "same-origin")
            self.end_headers()
            if not head_only:
                self.wfile.write(data)

        def do_GET(self):  # noqa: N802 - http.server's name
            self._send(head_only=False)

        def do_HEAD(self):  # noqa: N802
            self._send(head_only=True)

    return Handler


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def make_server(export_dir: str, port: int = 8000, web_dir: str | None = None, log=None):
    """Checks the export and the build and binds the server to 127.0.0.1:`port` (0: any
    free port). Returns (server, url, warnings); `server.serve_forever()` serves."""
    dist = find_web_dist(web_dir)
    check_web_dist(dist)
    manifest, warnings = check_export(export_dir)
    handler = make_handler(os.path.abspath(dist), os.path.abspath(export_dir), served_model_files(manifest), log)
    try:
        server = _Server(("127.0.0.1", port), handler)
    except OSError as err:
        raise ExploreError(
            f"cannot listen on 127.0.0.1:{port} ({err.strerror or err}); pass another --port (0: any free port)."
        ) from None
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    return server, url, warnings


def serve(export_dir: str, port: int = 8000, web_dir: str | None = None, open_browser: bool = False,
          verbose: bool = False) -> int:
    """`vae-tf explore`: prints the URL and serves until interrupted."""
    server, url, warnings = make_server(
        export_dir, port, web_dir, log=(lambda m: print(f"vae-tf explore: {m}", file=sys.stderr, flush=True)) if verbose else None
    )
    for warning in warnings:
        print(f"vae-tf explore: warning: {warning}", file=sys.stderr, flush=True)
    print(f"vae-tf explore: serving {export_dir} at {url} (Ctrl-C to stop)", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("vae-tf explore: stopped", file=sys.stderr)
        return 0
    finally:
        server.server_close()
    return 0
