// The page: the latent pad and sliders, the decoded view, samples from the prior,
// interpolation, the label picker (conditional models) and the runtime switch.

import {fromPca, interpolate, samplePrior, toPca} from './model.js';

const PALETTE = ['#6ea8fe', '#ffb25b', '#ff6b6b', '#63d3c8', '#7bd88f', '#ffe066', '#d39cf7', '#ff9ac1', '#c8a27c', '#c0c4cc'];
const NUM_SAMPLES = 16;
const INTERP_STEPS = 10;
const TIMING_WINDOW = 50;
const WARMUP_DECODES = 5;  // untimed decodes after a runtime starts (first calls allocate)
const SHORT = {
  onnx: ['ONNX Runtime Web', 'float32'],
  litert: ['LiteRT.js', 'float32'],
  'litert-int8': ['LiteRT.js', 'int8'],
  'litert-float16': ['LiteRT.js', 'float16'],
  'litert-dynamic-int8': ['LiteRT.js', 'dyn. int8'],
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (v !== false && v !== null && v !== undefined) node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) node.append(c);
  return node;
}

// Draws n images (data: Float32Array [n*H*W*C] in [0, 1]) into `canvas` on a grid of
// `cols` columns with `gap` pixels between them.
function drawImages(canvas, data, n, cols, [H, W, C], gap = 1) {
  const rows = Math.ceil(n / cols);
  const width = cols * W + (cols - 1) * gap;
  const height = rows * H + (rows - 1) * gap;
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(width, height);
  const px = img.data;
  for (let i = 0; i < px.length; i += 4) {
    px[i] = 22; px[i + 1] = 27; px[i + 2] = 34; px[i + 3] = 255;
  }
  const size = H * W * C;
  for (let i = 0; i < n; i++) {
    const x0 = (i % cols) * (W + gap);
    const y0 = Math.floor(i / cols) * (H + gap);
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const src = i * size + (y * W + x) * C;
        const dst = ((y0 + y) * width + x0 + x) * 4;
        for (let c = 0; c < 3; c++) {
          const v = data[src + (C === 1 ? 0 : c)];
          px[dst + c] = Math.round(255 * Math.min(1, Math.max(0, v)));
        }
      }
    }
  }
  ctx.putImageData(img, 0, 0);
  canvas.dataset.draws = String(Number(canvas.dataset.draws || 0) + 1);  // for scripts that wait on a redraw
}

function median(values) {
  const s = values.slice().sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : NaN;
}

function formatMs(ms) {
  if (!Number.isFinite(ms)) return '–';
  return ms < 1 ? `${ms.toFixed(3)} ms` : `${ms.toFixed(1)} ms`;
}

export function createUi() {
  const state = {
    model: null,
    runtime: null,        // name
    decoder: null,
    decoders: new Map(),  // name -> decoder
    label: 0,
    coords: [],
    samples: null,        // [n][D]
    sampleSeed: 1,
    randomPair: null,     // [a, b] latents
    times: [],
    busy: false,
    dirty: false,
    padBackground: null,
  };
  const ui = {firstImageMs: null};

  // --- Messages -------------------------------------------------------------------
  ui.message = (kind, text) => {
    const note = el('div', {class: `note note-${kind}`, role: kind === 'error' ? 'alert' : 'status'},
      el('span', {class: 'note-icon'}, kind === 'error' ? '!' : 'i'), el('span', {class: 'note-text'}, text));
    $('messages').append(note);
    return note;
  };

  ui.fatal = (text) => {
    document.body.classList.add('failed');
    $('loading').hidden = true;
    const box = $('fatal');
    box.hidden = false;
    $('fatal-text').textContent = text;
  };

  // --- Model summary ---------------------------------------------------------------
  ui.setModel = (model) => {
    state.model = model;
    const m = model.manifest;
    const arch = m.config && m.config.model ? m.config.model.architecture : '';
    const prior = {normal: 'N(0, I) prior', mog: 'mixture prior', vamp: 'VampPrior'}[m.prior] || `${m.prior} prior`;
    const name = (m.run_dir || '').split('/').filter(Boolean).pop() || 'model';
    $('model-summary').textContent =
      [arch && `${arch}`, `latent ${m.latent_dim}`, prior, model.conditional && 'conditional', m.image_shape.join('×')]
        .filter(Boolean).join(' · ');
    $('model-summary').title = `run ${m.run_dir} · exported by ${m.producer} on ${m.created}`;
    document.title = `vae-tf explorer · ${name}`;
    const K = model.explorer.pca.directions.length;
    state.coords = Array(K).fill(0);
    for (const spec of ['onnx', 'litert', 'litert-int8', 'litert-float16', 'litert-dynamic-int8']) {
      if (!Object.values(m.artifacts).some((a) => a.path === fileOf(spec))) continue;
      const [runtime, precision] = SHORT[spec];
      const button = el('button', {
        class: 'seg loading', type: 'button', role: 'radio', 'aria-checked': 'false', disabled: true,
        'data-runtime': spec, title: `${runtime}, ${precision}: ${fileOf(spec)} (loading…)`,
        onclick: () => selectRuntime(spec),
      }, el('span', {class: 'seg-top'}, el('span', {class: 'long'}, runtime),
        el('span', {class: 'short'}, runtime === 'ONNX Runtime Web' ? 'ORT Web' : runtime)),
      el('span', {class: 'seg-bottom'}, precision));
      $('runtime-switch').append(button);
    }
  };

  function fileOf(name) {
    return {
      onnx: 'decoder.onnx', litert: 'decoder_float32.tflite', 'litert-int8': 'decoder_int8.tflite',
      'litert-float16': 'decoder_float16.tflite', 'litert-dynamic-int8': 'decoder_dynamic_int8.tflite',
    }[name];
  }

  function runtimeButton(name) {
    return document.querySelector(`#runtime-switch [data-runtime="${name}"]`);
  }

  ui.addRuntime = (spec, decoder) => {
    state.decoders.set(spec.name, decoder);
    const b = runtimeButton(spec.name);
    if (b) {
      b.disabled = false;
      b.classList.remove('loading');
      b.title = `${spec.label}, ${spec.precision}: ${spec.file}`;
    }
  };

  ui.runtimeFailed = (spec, text) => {
    const b = runtimeButton(spec.name);
    if (b) {
      b.classList.remove('loading');
      b.classList.add('failed');
      b.title = text;
    }
    ui.message('error', `${spec.label} (${spec.precision}, ${spec.file}) is not available: ${text}`);
  };

  ui.setReady = () => {
    document.body.classList.add('ready');
    for (const b of document.querySelectorAll('#runtime-switch .loading')) b.classList.remove('loading');
  };

  async function warmUp(decoder) {
    const z = Float32Array.from(currentLatent());
    for (let i = 0; i < WARMUP_DECODES; i++) await decoder.run(z, labelsFor(1), 1);
  }

  async function selectRuntime(name) {
    const decoder = state.decoders.get(name);
    if (!decoder) return;
    await guarded(warmUp)(decoder);
    state.runtime = name;
    state.decoder = decoder;
    state.times = [];
    for (const b of document.querySelectorAll('#runtime-switch .seg')) {
      const on = b.dataset.runtime === name;
      b.classList.toggle('active', on);
      b.setAttribute('aria-checked', on ? 'true' : 'false');
    }
    $('decode-time').textContent = '–';
    $('view-runtime').textContent = `${SHORT[name][0]} · ${SHORT[name][1]} · ${fileOf(name)}`;
    showDetails();
    redrawAll();
  }

  function showDetails() {
    const m = state.model.manifest;
    const entry = m.artifacts[fileOf(state.runtime)] || {};
    const source = state.model.explorer.source;
    const loaded = window.vae && window.vae.timings[`load_${state.runtime}_ms`];
    const rows = [
      ['decoder file', `${fileOf(state.runtime)} · ${(entry.size_bytes / 1024).toFixed(0)} KiB` +
        (loaded ? ` · loaded in ${loaded.toFixed(0)} ms` : '')],
      ['export check', entry.max_abs_diff !== undefined
        ? `max |diff| vs TF ${entry.max_abs_diff.toExponential(1)} (tolerance ${entry.tolerance < 1e-3 ? entry.tolerance.toExponential(0) : entry.tolerance})` : '–'],
      ['decoder cost', m.decoder_macs_per_image ? `${(m.decoder_macs_per_image / 1000).toFixed(0)}k multiply-adds per image` : '–'],
      ['pad axes', `PCA of the codes of ${source.num_images} held-out images (${source.data}, ${source.split} split)`],
    ];
    $('details').replaceChildren(...rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  }

  // --- Decoding ---------------------------------------------------------------------
  function labelsFor(n) {
    return state.model.conditional ? new Int32Array(n).fill(state.label) : null;
  }

  async function decodeLatents(latents) {
    const D = state.model.latentDim;
    const z = new Float32Array(latents.length * D);
    latents.forEach((row, i) => z.set(row, i * D));
    return state.decoder.run(z, labelsFor(latents.length), latents.length);
  }

  function currentLatent() {
    return fromPca(state.model, state.coords);
  }

  // The pad's decode: one latent, timed; coalesced so only the latest position is drawn.
  function requestDecode() {
    state.dirty = true;
    if (!state.busy) state.loop = decodeLoop();
    return state.loop;
  }

  async function decodeLoop() {
    state.busy = true;
    try {
      while (state.dirty) {
        state.dirty = false;
        const z = Float32Array.from(currentLatent());
        const image = await state.decoder.run(z, labelsFor(1), 1);
        state.times.push(image.decodeMs);
        if (state.times.length > TIMING_WINDOW) state.times.shift();
        drawImages($('view'), image, 1, 1, state.model.imageShape);
        $('decode-time').textContent = formatMs(median(state.times));
        $('decode-time').title = `median of the last ${state.times.length} batch-1 decodes in ${state.runtime}`;
        if (ui.firstImageMs === null) ui.firstImageMs = performance.now();
        updateReadout();
      }
    } catch (err) {
      ui.message('error', `Decoding failed in ${state.runtime}: ${err.message}`);
    } finally {
      state.busy = false;
    }
  }

  function updateReadout() {
    const {pca} = state.model.explorer;
    const parts = state.coords.slice(0, 2).map((c, k) => `PC${k + 1} ${c >= 0 ? '+' : '−'}${Math.abs(c).toFixed(2)}`);
    const z = currentLatent();
    const norm = Math.sqrt(z.reduce((s, v) => s + v * v, 0));
    $('readout').textContent = `${parts.join('  ')}  ·  |z| ${norm.toFixed(2)}`;
    $('readout').title = `${pca.directions.length} principal directions of ${state.model.explorer.source.num_images} held-out codes`;
  }

  // --- The pad ----------------------------------------------------------------------
  const pad = () => $('pad');

  // The pad's span on its two axes (a model with a 1-D latent gets a flat second axis).
  function padRange() {
    const {range} = state.model.explorer.pca;
    return [range[0], range[1] || [-1, 1]];
  }

  function padToCoords(px, py, rect) {
    const [rx, ry] = padRange();
    const x = rx[0] + (px / rect.width) * (rx[1] - rx[0]);
    const y = ry[1] - (py / rect.height) * (ry[1] - ry[0]);
    return [x, y];
  }

  function coordsToPad(x, y, w, h) {
    const [rx, ry] = padRange();
    return [((x - rx[0]) / (rx[1] - rx[0])) * w, ((ry[1] - y) / (ry[1] - ry[0])) * h];
  }

  function drawPadBackground(w, h, dpr) {
    const off = document.createElement('canvas');
    off.width = w * dpr;
    off.height = h * dpr;
    const ctx = off.getContext('2d');
    ctx.scale(dpr, dpr);
    ctx.fillStyle = '#0f141b';
    ctx.fillRect(0, 0, w, h);
    ctx.strokeStyle = 'rgba(255,255,255,0.06)';
    ctx.lineWidth = 1;
    for (let i = 1; i < 8; i++) {
      ctx.beginPath(); ctx.moveTo((i * w) / 8, 0); ctx.lineTo((i * w) / 8, h); ctx.stroke();
      ctx.beginPath(); ctx.moveTo(0, (i * h) / 8); ctx.lineTo(w, (i * h) / 8); ctx.stroke();
    }
    const [ox, oy] = coordsToPad(0, 0, w, h);
    ctx.strokeStyle = 'rgba(255,255,255,0.18)';
    ctx.beginPath(); ctx.moveTo(ox, 0); ctx.lineTo(ox, h); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(0, oy); ctx.lineTo(w, oy); ctx.stroke();
    const {coords, labels} = state.model.explorer.points;
    const highlight = state.model.conditional ? state.label : null;
    coords.forEach(([x, y], i) => {
      const [px, py] = coordsToPad(x, y, w, h);
      const dim = highlight !== null && labels[i] !== highlight;
      ctx.globalAlpha = dim ? 0.12 : 0.75;
      ctx.fillStyle = PALETTE[labels[i] % PALETTE.length];
      ctx.beginPath();
      ctx.arc(px, py, dim ? 1.6 : 2.2, 0, 2 * Math.PI);
      ctx.fill();
    });
    ctx.globalAlpha = 1;
    return off;
  }

  function drawPad() {
    const canvas = pad();
    const rect = canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const w = Math.round(rect.width);
    const h = Math.round(rect.height);
    if (!w || !h) return;
    if (canvas.width !== w * dpr || canvas.height !== h * dpr || !state.padBackground) {
      canvas.width = w * dpr;
      canvas.height = h * dpr;
      state.padBackground = drawPadBackground(w, h, dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.drawImage(state.padBackground, 0, 0);
    ctx.scale(dpr, dpr);
    const [px, py] = coordsToPad(state.coords[0], state.coords[1], w, h);
    ctx.strokeStyle = 'rgba(124,156,255,0.55)';
    ctx.lineWidth = 1;
    ctx.setLineDash([4, 4]);
    ctx.beginPath(); ctx.moveTo(px, 0); ctx.lineTo(px, h); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(0, py); ctx.lineTo(w, py); ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = '#ffffff';
    ctx.strokeStyle = '#7c9cff';
    ctx.lineWidth = 3;
    ctx.beginPath(); ctx.arc(px, py, 7, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
  }

  function setFromPointer(event) {
    const rect = pad().getBoundingClientRect();
    const px = Math.min(rect.width, Math.max(0, event.clientX - rect.left));
    const py = Math.min(rect.height, Math.max(0, event.clientY - rect.top));
    const [x, y] = padToCoords(px, py, rect);
    state.coords[0] = x;
    state.coords[1] = y;
    drawPad();
    requestDecode();
  }

  function wirePad() {
    const canvas = pad();
    canvas.addEventListener('pointerdown', (e) => {
      canvas.setPointerCapture(e.pointerId);
      setFromPointer(e);
    });
    canvas.addEventListener('pointermove', (e) => {
      if (e.pointerType === 'mouse' || e.buttons) setFromPointer(e);
    });
    canvas.addEventListener('keydown', (e) => {
      const [rx, ry] = padRange();
      const step = {ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1]}[e.key];
      if (!step) return;
      e.preventDefault();
      state.coords[0] = Math.min(rx[1], Math.max(rx[0], state.coords[0] + step[0] * 0.02 * (rx[1] - rx[0])));
      state.coords[1] = Math.min(ry[1], Math.max(ry[0], state.coords[1] + step[1] * 0.02 * (ry[1] - ry[0])));
      drawPad();
      requestDecode();
    });
    new ResizeObserver(() => {
      state.padBackground = null;
      drawPad();
    }).observe(canvas);
  }

  function buildAxes() {
    const {explained_variance_ratio: ratio} = state.model.explorer.pca;
    $('pad-x').textContent = `PC 1 · ${(100 * ratio[0]).toFixed(1)}% of the variance →`;
    $('pad-y').textContent = ratio.length > 1 ? `PC 2 · ${(100 * ratio[1]).toFixed(1)}% →` : '(a 1-D latent)';
    const legend = $('legend');
    legend.replaceChildren();
    const present = [...new Set(state.model.explorer.points.labels)].sort((a, b) => a - b);
    for (const label of present) {
      legend.append(el('span', {class: 'legend-item'},
        el('span', {class: 'dot', style: `background:${PALETTE[label % PALETTE.length]}`}), String(label)));
    }
  }

  // --- Sliders for the next directions -----------------------------------------------
  function buildSliders() {
    const {range, explained_variance_ratio: ratio} = state.model.explorer.pca;
    const box = $('sliders');
    box.replaceChildren();
    document.querySelector('.sliders-card').hidden = range.length <= 2;
    for (let k = 2; k < range.length; k++) {
      const [lo, hi] = range[k];
      const value = el('output', {class: 'slider-value'}, '0.00');
      const input = el('input', {
        type: 'range', min: lo, max: hi, step: (hi - lo) / 400, value: 0, 'aria-label': `principal direction ${k + 1}`,
        'data-direction': k,
        oninput: (e) => {
          state.coords[k] = Number(e.target.value);
          value.textContent = state.coords[k].toFixed(2);
          requestDecode();
        },
      });
      box.append(el('label', {class: 'slider', title: `${(100 * ratio[k]).toFixed(1)}% of the codes' variance`},
        el('span', {class: 'slider-name'}, `PC ${k + 1}`), input, value));
    }
  }

  function setCoords(coords) {
    coords.forEach((c, k) => { state.coords[k] = c; });
    for (const input of document.querySelectorAll('#sliders input')) {
      const k = Number(input.dataset.direction);
      input.value = state.coords[k];
      input.nextElementSibling.textContent = state.coords[k].toFixed(2);
    }
    drawPad();
    return requestDecode();
  }

  function center() {
    setCoords(state.coords.map(() => 0));
  }

  // --- Label picker (conditional models) ----------------------------------------------
  function buildLabelPicker() {
    if (!state.model.conditional) return;
    $('label-bar').hidden = false;
    const box = $('label-picker');
    box.replaceChildren();
    for (let c = 0; c < state.model.numClasses; c++) {
      box.append(el('button', {
        type: 'button', class: `chip${c === state.label ? ' active' : ''}`, role: 'radio',
        'aria-checked': c === state.label ? 'true' : 'false', 'data-label': c,
        style: `--chip:${PALETTE[c % PALETTE.length]}`, onclick: () => selectLabel(c),
      }, String(c)));
    }
  }

  function selectLabel(c) {
    state.label = c;
    for (const b of document.querySelectorAll('#label-picker .chip')) {
      const on = Number(b.dataset.label) === c;
      b.classList.toggle('active', on);
      b.setAttribute('aria-checked', on ? 'true' : 'false');
    }
    state.padBackground = null;
    drawPad();
    state.samples = null;  // draw again from class c's prior with the same seed
    redrawAll();
  }

  // --- Samples from the prior ---------------------------------------------------------
  async function drawSamples() {
    if (!state.samples) {
      state.samples = samplePrior(state.model, NUM_SAMPLES, state.label, state.sampleSeed);
    }
    const images = await decodeLatents(state.samples);
    drawImages($('samples'), images, NUM_SAMPLES, 8, state.model.imageShape, 2);
    const what = state.model.conditional ? ` of class ${state.label}` : '';
    $('sample-info').textContent = `${NUM_SAMPLES} draws${what} · seed ${state.sampleSeed}`;
    refreshEndpointOptions();
  }

  // --- Interpolation ------------------------------------------------------------------
  function endpointLatent(value) {
    const [kind, index] = value.split(':');
    if (kind === 'example') return state.model.explorer.examples[Number(index)].z;
    if (kind === 'sample') return state.samples ? state.samples[Number(index)] : null;
    if (kind === 'random') return state.randomPair ? state.randomPair[Number(index)] : null;
    return null;
  }

  function refreshEndpointOptions() {
    for (const id of ['interp-a', 'interp-b']) {
      const select = $(id);
      const keep = select.value;
      select.replaceChildren();
      if (state.randomPair) {
        select.append(el('optgroup', {label: 'Random pair from the prior'},
          ...state.randomPair.map((_, i) => el('option', {value: `random:${i}`}, `random ${i === 0 ? 'A' : 'B'}`))));
      }
      select.append(el('optgroup', {label: 'Held-out examples (their codes)'},
        ...state.model.explorer.examples.map((e, i) => el('option', {value: `example:${i}`}, `class ${e.label} · #${e.index}`))));
      if (state.samples) {
        select.append(el('optgroup', {label: 'Samples above'},
          ...state.samples.map((_, i) => el('option', {value: `sample:${i}`}, `sample ${i + 1}`))));
      }
      if ([...select.options].some((o) => o.value === keep)) select.value = keep;
    }
  }

  function defaultEndpoints() {
    const examples = state.model.explorer.examples;
    const a = 0;
    let b = examples.findIndex((e) => e.label !== examples[a].label && e.label === (examples[a].label + 7) % 10);
    if (b < 0) b = examples.findIndex((e) => e.label !== examples[a].label);
    $('interp-a').value = `example:${a}`;
    $('interp-b').value = `example:${b < 0 ? Math.min(1, examples.length - 1) : b}`;
  }

  async function drawInterpolation() {
    const a = endpointLatent($('interp-a').value);
    const b = endpointLatent($('interp-b').value);
    if (!a || !b) return;
    const frames = interpolate(a, b, INTERP_STEPS, $('interp-mode').value, state.model.explorer.pca.mean);
    const images = await decodeLatents(frames);
    drawImages($('interp'), images, INTERP_STEPS, INTERP_STEPS, state.model.imageShape, 2);
  }

  async function randomPair() {
    state.randomPair = samplePrior(state.model, 2, state.label, 1000 + state.sampleSeed++);
    refreshEndpointOptions();
    $('interp-a').value = 'random:0';
    $('interp-b').value = 'random:1';
    await guarded(drawInterpolation)();
  }

  function guarded(fn) {
    return async (...args) => {
      try {
        await fn(...args);
      } catch (err) {
        ui.message('error', `${err.message}`);
      }
    };
  }

  async function redrawAll() {
    requestDecode();
    await guarded(drawSamples)();
    await guarded(drawInterpolation)();
  }

  // --- Start --------------------------------------------------------------------------
  ui.start = async (decoder, spec) => {
    state.decoders.set(spec.name, decoder);
    buildAxes();
    buildSliders();
    buildLabelPicker();
    refreshEndpointOptions();
    defaultEndpoints();
    wirePad();
    $('center').addEventListener('click', center);
    $('sample').addEventListener('click', guarded(async () => {
      state.sampleSeed += 1;
      state.samples = null;
      await drawSamples();
    }));
    $('random-pair').addEventListener('click', randomPair);
    $('swap').addEventListener('click', guarded(async () => {
      const a = $('interp-a').value;
      $('interp-a').value = $('interp-b').value;
      $('interp-b').value = a;
      await drawInterpolation();
    }));
    for (const id of ['interp-a', 'interp-b', 'interp-mode']) $(id).addEventListener('change', guarded(drawInterpolation));
    $('loading').hidden = true;
    document.body.classList.add('started');
    // The first image first (the page's load time is measured to it), then the rest.
    state.runtime = spec.name;
    state.decoder = decoder;
    runtimeButton(spec.name)?.classList.add('active');
    runtimeButton(spec.name)?.setAttribute('aria-checked', 'true');
    $('view-runtime').textContent = `${SHORT[spec.name][0]} · ${SHORT[spec.name][1]} · ${spec.file}`;
    showDetails();
    // Start on a held-out example's place in the PCA plane (the mean itself is a blur).
    const first = state.model.explorer.examples[0];
    await setCoords(first ? toPca(state.model, first.z) : state.coords);
    await guarded(warmUp)(decoder);
    state.times = [];
    await requestDecode();
    await guarded(drawSamples)();
    await guarded(drawInterpolation)();
  };

  return ui;
}
