// Boots the explorer: loads the export served under ./model/, starts every decoder the
// export has (onnxruntime-web first, so the first image appears as soon as it is ready),
// draws the page (ui.js) and exposes the contract outside scripts use, window.vae:
//
//   await vae.ready;                         // every decoder loaded (or failed, see vae.errors)
//   vae.latentDim, vae.imageShape            // e.g. 32, [28, 28, 1]
//   vae.runtimes                             // e.g. ["onnx", "litert", "litert-int8", ...]
//   const images = await vae.decode([[...32 numbers]], "onnx");
//   // images[i]: H*W*C numbers in [0, 1], row-major (H, W, C)
//
// For a conditional model, decode takes the labels as a third argument (an int or one
// int per latent). See the README, section "The explorer in the browser".

import {ExportError, fetchBytes, fetchVerified, loadExport, rng} from './model.js';
import {RUNTIME_SPECS, createDecoder, preload} from './runtimes.js';
import {createUi} from './ui.js';

const MODEL_BASE = new URL('./model/', window.location.href);

const decoders = new Map();  // runtime name -> {spec, decoder}
const errors = {};           // runtime name (or "page") -> message
let resolveReady;
let rejectReady;
const ready = new Promise((resolve, reject) => {
  resolveReady = resolve;
  rejectReady = reject;
});
ready.catch(() => {});  // a failure is shown on the page; scripts see the rejection

const vae = {
  ready,
  latentDim: null,
  imageShape: null,
  conditional: null,
  numClasses: null,
  runtimes: [],
  errors,
  timings: {},
  decode,
  benchmark,
};
window.vae = vae;
window.__explorerStarted = true;

function checkLatents(latents) {
  if (!Array.isArray(latents) || latents.length === 0) {
    throw new TypeError('vae.decode(latents, runtime): latents must be a non-empty array of arrays of numbers.');
  }
  const D = vae.latentDim;
  const z = new Float32Array(latents.length * D);
  latents.forEach((row, i) => {
    if (!Array.isArray(row) && !ArrayBuffer.isView(row)) {
      throw new TypeError(`vae.decode: latents[${i}] is not an array of numbers.`);
    }
    if (row.length !== D) {
      throw new RangeError(`vae.decode: latents[${i}] has ${row.length} numbers; this model's latent has ${D}.`);
    }
    for (let d = 0; d < D; d++) {
      const v = row[d];
      if (typeof v !== 'number' || !Number.isFinite(v)) {
        throw new TypeError(`vae.decode: latents[${i}][${d}] is ${v}, not a finite number.`);
      }
      z[i * D + d] = v;
    }
  });
  return z;
}

function checkLabels(labels, n) {
  if (!vae.conditional) {
    if (labels !== undefined && labels !== null) {
      throw new TypeError('vae.decode: this model is not conditional; it takes no labels.');
    }
    return null;
  }
  if (labels === undefined || labels === null) {
    throw new TypeError(`vae.decode(latents, runtime, labels): this model is conditional: ` +
                        `give a label in [0, ${vae.numClasses}) or one per latent.`);
  }
  const list = Array.isArray(labels) ? labels : Array(n).fill(labels);
  if (list.length !== n) throw new RangeError(`vae.decode: ${list.length} labels for ${n} latents.`);
  const out = new Int32Array(n);
  list.forEach((v, i) => {
    if (!Number.isInteger(v) || v < 0 || v >= vae.numClasses) {
      throw new RangeError(`vae.decode: labels[${i}] is ${v}; expected an integer in [0, ${vae.numClasses}).`);
    }
    out[i] = v;
  });
  return out;
}

function decoderFor(runtime) {
  const name = runtime === undefined ? vae.runtimes[0] : runtime;
  const entry = decoders.get(name);
  if (!entry) {
    const why = errors[name] ? ` (${errors[name]})` : '';
    throw new Error(`vae.decode: runtime "${name}" is not available${why}; available: ${vae.runtimes.join(', ') || 'none'}.`);
  }
  return entry;
}

// Decoded images for `latents` ([n][D]) in `runtime`: [n][H*W*C] numbers in [0, 1].
async function decode(latents, runtime, labels) {
  await ready;
  const {decoder} = decoderFor(runtime);
  const z = checkLatents(latents);
  const n = latents.length;
  const out = await decoder.run(z, checkLabels(labels, n), n);
  const size = out.length / n;
  return Array.from({length: n}, (_, i) => Array.from(out.subarray(i * size, (i + 1) * size)));
}

// Per-call latency of `runtime` on prepared inputs (the runtime's own call, as the page
// pays it): {median_ms, p10_ms, p90_ms, mean_ms, calls, batch}.
async function benchmark(runtime, {calls = 500, warmup = 50, batch = 1, seed = 0} = {}) {
  await ready;
  const entry = decoderFor(runtime);
  const {spec} = entry;
  const decoder = await entry.decoder.idle();  // the runtime's own call, nothing queued around it
  const random = rng(seed);
  const z = Float32Array.from({length: batch * vae.latentDim}, () => random.normal());
  const labels = vae.conditional ? Int32Array.from({length: batch}, (_, i) => i % vae.numClasses) : null;
  for (let i = 0; i < warmup; i++) await decoder.run(z, labels, batch);
  const times = new Float64Array(calls);
  for (let i = 0; i < calls; i++) {
    const start = performance.now();
    await decoder.run(z, labels, batch);
    times[i] = performance.now() - start;
  }
  const sorted = Array.from(times).sort((a, b) => a - b);
  const q = (p) => sorted[Math.min(calls - 1, Math.floor(p * calls))];
  return {
    runtime: spec.name, file: spec.file, calls, batch, median_ms: q(0.5), p10_ms: q(0.1), p90_ms: q(0.9),
    mean_ms: sorted.reduce((s, v) => s + v, 0) / calls,
    timer_resolution_isolated: Boolean(window.crossOriginIsolated),
  };
}

// The first decoder's file and runtime start loading with the page (before the manifest).
const FIRST = RUNTIME_SPECS[0];
const early = {[FIRST.file]: fetchBytes(MODEL_BASE, FIRST.file)};
early[FIRST.file].catch(() => {});
preload(FIRST.runtime);

async function loadDecoder(model, spec) {
  const start = performance.now();
  const bytes = await fetchVerified(MODEL_BASE, spec.file, model.manifest.artifacts[spec.file], early[spec.file]);
  const decoder = await createDecoder(spec, bytes, model);
  vae.timings[`load_${spec.name}_ms`] = performance.now() - start;
  return decoder;
}

async function boot() {
  const ui = createUi();
  let model;
  try {
    model = await loadExport(MODEL_BASE);
  } catch (err) {
    errors.page = err.message;
    ui.fatal(err instanceof ExportError ? err.message : `The export could not be loaded: ${err.message}`);
    rejectReady(err);
    return;
  }
  Object.assign(vae, {
    latentDim: model.latentDim, imageShape: model.imageShape, conditional: model.conditional,
    numClasses: model.numClasses,
  });
  ui.setModel(model);
  const specs = RUNTIME_SPECS.filter((s) => model.manifest.artifacts[s.file]);
  if (!model.manifest.artifacts['decoder.onnx']) {
    errors.onnx = 'this export has no decoder.onnx';
    ui.message('error', 'This export has no decoder.onnx, so ONNX Runtime Web is not offered.');
  }
  let started = false;
  for (const spec of specs) {
    try {
      const decoder = await loadDecoder(model, spec);
      decoders.set(spec.name, {spec, decoder});
      vae.runtimes.push(spec.name);
      ui.addRuntime(spec, decoder);
      if (!started) {
        started = true;
        await ui.start(decoder, spec);
        vae.timings.first_image_ms = ui.firstImageMs;
      }
    } catch (err) {
      errors[spec.name] = err.message;
      console.error(err);
      ui.runtimeFailed(spec, err.message);
    }
  }
  if (!started) {
    const why = Object.entries(errors).map(([k, v]) => `${k}: ${v}`).join(' · ');
    ui.fatal('No decoder of this export could be loaded, so nothing can be drawn; the reason for each ' +
             'file is above. Check the export directory, or export the run again.');
    rejectReady(new Error(`No decoder of this export could be loaded. ${why}`));
    return;
  }
  ui.setReady();
  resolveReady();
}

boot().catch((err) => {
  console.error(err);
  errors.page = `${err.message}`;
  window.__bootFailed(`The explorer stopped with an error: ${err.message}`);
  rejectReady(err);
});
