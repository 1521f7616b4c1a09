// The exported model as the page sees it: manifest.json, explorer.json (written by
// `vae-tf export`) and the decoder files, each checked against the manifest's sha256;
// latents from the pad, the sliders, the model's prior and interpolation.

export class ExportError extends Error {}

export async function fetchBytes(base, file) {
  let response;
  try {
    response = await fetch(new URL(file, base));
  } catch (err) {
    throw new ExportError(`${file}: could not be fetched (${err.message}); is \`vae-tf explore\` still running?`);
  }
  if (!response.ok) {
    throw new ExportError(`${file}: the server answered ${response.status} ${response.statusText}` +
                          (response.status === 404 ? ' (the export directory has no such file)' : ''));
  }
  return new Uint8Array(await response.arrayBuffer());
}

async function sha256(bytes) {
  const digest = await crypto.subtle.digest('SHA-256', bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

// The bytes of `file` (fetched here, or the promise of an earlier fetch), checked
// against its manifest entry (size and sha256).
export async function fetchVerified(base, file, entry, fetched = null) {
  const bytes = await (fetched || fetchBytes(base, file));
  if (entry.size_bytes !== undefined && bytes.byteLength !== entry.size_bytes) {
    throw new ExportError(`${file} is corrupt: ${bytes.byteLength} bytes, the manifest says ${entry.size_bytes}.`);
  }
  if (entry.sha256 && (await sha256(bytes)) !== entry.sha256) {
    throw new ExportError(`${file} is corrupt: its sha256 differs from the manifest's (the file was changed or damaged).`);
  }
  return bytes;
}

function parseJson(bytes, file) {
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    throw new ExportError(`${file} is not valid JSON (${err.message}).`);
  }
}

// manifest.json and explorer.json of the export served under `base`.
export async function loadExport(base) {
  const explorerBytes = fetchBytes(base, 'explorer.json');  // in parallel; checked below
  explorerBytes.catch(() => {});
  const manifest = parseJson(await fetchBytes(base, 'manifest.json'), 'manifest.json');
  if (!manifest.artifacts || !manifest.latent_dim || !manifest.image_shape) {
    throw new ExportError('manifest.json is not a vae-tf export manifest (no artifacts, latent_dim or image_shape).');
  }
  if (!manifest.explorer) {
    throw new ExportError('this export has no explorer.json (it was exported before the explorer existed): ' +
                          'export the run again with `vae-tf export RUN_DIR --out EXPORT_DIR --overwrite`.');
  }
  const explorer = parseJson(await fetchVerified(base, 'explorer.json', manifest.explorer, explorerBytes), 'explorer.json');
  const [h, w, c] = manifest.image_shape;
  return {
    manifest,
    explorer,
    latentDim: manifest.latent_dim,
    imageShape: [h, w, c],
    imageSize: h * w * c,
    conditional: Boolean(manifest.conditional),
    numClasses: manifest.num_classes,
  };
}

// --- Random numbers: a small seeded generator (sfc32) and normals (Box-Muller). ---

export function rng(seed) {
  let a = 0x9e3779b9, b = 0x243f6a88, c = 0xb7e15162, d = seed >>> 0;
  const next = () => {
    a >>>= 0; b >>>= 0; c >>>= 0; d >>>= 0;
    const t = (a + b | 0) + d | 0;
    d = d + 1 | 0;
    a = b ^ b >>> 9;
    b = c + (c << 3) | 0;
    c = c << 21 | c >>> 11;
    c = c + t | 0;
    return (t >>> 0) / 4294967296;
  };
  for (let i = 0; i < 12; i++) next();
  let spare = null;
  return {
    uniform: next,
    normal() {
      if (spare !== null) {
        const s = spare;
        spare = null;
        return s;
      }
      let u = 0;
      while (u === 0) u = next();
      const r = Math.sqrt(-2 * Math.log(u));
      const theta = 2 * Math.PI * next();
      spare = r * Math.sin(theta);
      return r * Math.cos(theta);
    },
  };
}

// n latents [n][D] from the model's prior: N(0, I), its mixture, or class `label`'s mixture.
export function samplePrior(model, n, label, seed) {
  const prior = model.explorer.prior;
  const D = model.latentDim;
  const random = rng(seed);
  const out = [];
  for (let i = 0; i < n; i++) {
    const eps = Array.from({length: D}, () => random.normal());
    if (prior.type === 'normal') {
      out.push(eps);
      continue;
    }
    const pick = (x) => (prior.per_class ? x[label] : x);
    const logWeights = pick(prior.log_weights);
    const weights = logWeights.map(Math.exp);
    let u = random.uniform() * weights.reduce((s, v) => s + v, 0);
    let k = 0;
    while (k < weights.length - 1 && u >= weights[k]) u -= weights[k++];
    const loc = pick(prior.loc)[k];
    if (prior.scale_diag) {
      const scale = pick(prior.scale_diag)[k];
      out.push(loc.map((m, d) => m + scale[d] * eps[d]));
    } else {
      const tril = pick(prior.scale_tril)[k];
      out.push(loc.map((m, d) => m + tril[d].reduce((s, v, j) => (j <= d ? s + v * eps[j] : s), 0)));
    }
  }
  return out;
}

// The latent at PCA coordinates `coords` (one per direction; missing ones are 0).
export function fromPca(model, coords) {
  const {mean, directions} = model.explorer.pca;
  const z = mean.slice();
  coords.forEach((c, k) => {
    if (c && directions[k]) directions[k].forEach((v, d) => { z[d] += c * v; });
  });
  return z;
}

// The PCA coordinates of latent z (its projection on each direction).
export function toPca(model, z) {
  const {mean, directions} = model.explorer.pca;
  return directions.map((dir) => dir.reduce((s, v, d) => s + v * (z[d] - mean[d]), 0));
}

// Frames between latents a and b: linear, or spherical (slerp) about the PCA mean.
export function interpolate(a, b, steps, mode, center) {
  const frames = [];
  const c = center || a.map(() => 0);
  const ua = a.map((v, d) => v - c[d]);
  const ub = b.map((v, d) => v - c[d]);
  const norm = (x) => Math.sqrt(x.reduce((s, v) => s + v * v, 0));
  const omega = Math.acos(Math.min(1, Math.max(-1, ua.reduce((s, v, d) => s + v * ub[d], 0) / (norm(ua) * norm(ub) || 1))));
  for (let i = 0; i < steps; i++) {
    const t = steps === 1 ? 0 : i / (steps - 1);
    if (mode === 'spherical' && omega > 1e-6) {
      const wa = Math.sin((1 - t) * omega) / Math.sin(omega);
      const wb = Math.sin(t * omega) / Math.sin(omega);
      frames.push(ua.map((v, d) => c[d] + wa * v + wb * ub[d]));
    } else {
      frames.push(a.map((v, d) => v + t * (b[d] - v)));
    }
  }
  return frames;
}
