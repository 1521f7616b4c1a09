// The exported decoders behind one interface, each in its own in-browser runtime:
// decoder.onnx in onnxruntime-web (WebAssembly, one thread) and the .tflite files in
// LiteRT.js (WebAssembly with XNNPACK, one thread). Both runtimes are imported on
// first use, so a runtime whose files are missing disables only its own decoders.
//
//   const decoder = await createDecoder(spec, bytes, model);
//   const images = await decoder.run(z, labels, n);  // Float32Array [n * H * W * C]

const ORT_DIR = new URL('./vendor/ort/', import.meta.url).href;
const LITERT_DIR = new URL('./vendor/litert/wasm/', import.meta.url).href;

// name -> exported file and runtime; the page offers those whose file the export has.
export const RUNTIME_SPECS = [
  {name: 'onnx', file: 'decoder.onnx', runtime: 'ort', label: 'ONNX Runtime Web', precision: 'float32'},
  {name: 'litert', file: 'decoder_float32.tflite', runtime: 'litert', label: 'LiteRT.js', precision: 'float32'},
  {name: 'litert-int8', file: 'decoder_int8.tflite', runtime: 'litert', label: 'LiteRT.js', precision: 'int8'},
  {name: 'litert-float16', file: 'decoder_float16.tflite', runtime: 'litert', label: 'LiteRT.js', precision: 'float16 weights'},
  {name: 'litert-dynamic-int8', file: 'decoder_dynamic_int8.tflite', runtime: 'litert', label: 'LiteRT.js', precision: 'dynamic int8'},
];

let ortPromise = null;
let litertPromise = null;

function runtimeMissing(what, err) {
  return new Error(
    `${what} could not be loaded (${err && err.message ? err.message : err}). ` +
    'The page\'s build may be incomplete: rebuild it with `npm ci --prefix web && npm run --prefix web build`.');
}

async function loadOrt() {
  if (!ortPromise) {
    ortPromise = (async () => {
      let ort;
      try {
        ort = await import('./vendor/ort/ort.wasm.min.mjs');
      } catch (err) {
        throw runtimeMissing('onnxruntime-web (vendor/ort/ort.wasm.min.mjs)', err);
      }
      ort.env.wasm.numThreads = 1;
      ort.env.wasm.proxy = false;
      ort.env.wasm.wasmPaths = ORT_DIR;
      ort.env.logLevel = 'error';
      return ort;
    })();
  }
  return ortPromise;
}

async function loadLiteRtModule() {
  if (!litertPromise) {
    litertPromise = (async () => {
      let litert;
      try {
        litert = await import('./vendor/litert/core.js');
      } catch (err) {
        throw runtimeMissing('LiteRT.js (vendor/litert/core.js)', err);
      }
      try {
        await litert.loadLiteRt(LITERT_DIR);
      } catch (err) {
        throw runtimeMissing('LiteRT.js WebAssembly (vendor/litert/wasm/)', err);
      }
      return litert;
    })();
  }
  return litertPromise;
}

class OrtDecoder {
  constructor(ort, session, model) {
    this.ort = ort;
    this.session = session;
    this.latentDim = model.latentDim;
    this.conditional = model.conditional;
    this.batchSize = null;  // any batch
  }

  static async create(bytes, model) {
    const ort = await loadOrt();
    const session = await ort.InferenceSession.create(bytes, {
      executionProviders: ['wasm'],
      graphOptimizationLevel: 'all',
      intraOpNumThreads: 1,
      interOpNumThreads: 1,
    });
    const wanted = model.conditional ? ['z', 'label'] : ['z'];
    for (const name of wanted) {
      if (!session.inputNames.includes(name)) {
        throw new Error(`decoder.onnx has no input "${name}" (inputs: ${session.inputNames.join(', ')}).`);
      }
    }
    if (!session.outputNames.includes('image')) {
      throw new Error(`decoder.onnx has no output "image" (outputs: ${session.outputNames.join(', ')}).`);
    }
    return new OrtDecoder(ort, session, model);
  }

  async run(z, labels, n) {
    const feeds = {z: new this.ort.Tensor('float32', z, [n, this.latentDim])};
    if (this.conditional) feeds.label = new this.ort.Tensor('int32', labels, [n]);
    const out = await this.session.run(feeds);
    return out.image.data;
  }
}

class LiteRtDecoder {
  constructor(litert, compiled, runner, batchSize, model) {
    this.litert = litert;
    this.compiled = compiled;
    this.runner = runner;
    this.batchSize = batchSize;  // the batch the compiled model runs
    this.latentDim = model.latentDim;
    this.conditional = model.conditional;
    this.imageSize = model.imageSize;
  }

  static async create(bytes, model, file) {
    const litert = await loadLiteRtModule();
    // LiteRT.js 2.5 runs only the shapes a file declares (it cannot resize an input), so
    // a file with an open batch runs with its batch fixed at 1 (`fixOpenBatch`).
    const openBatch = fixOpenBatch(bytes);
    const compiled = await litert.loadAndCompile(bytes, {accelerator: 'wasm', cpuOptions: {numThreads: 1}});
    const runner = compiled.signatures.decode;
    if (!runner) {
      throw new Error(`${file} has no "decode" signature (signatures: ${Object.keys(compiled.signatures).join(', ')}).`);
    }
    const inputs = runner.getInputDetails();
    const z = inputs.find((d) => d.name === 'z');
    if (!z || (model.conditional && !inputs.some((d) => d.name === 'label'))) {
      throw new Error(`${file}: its decode signature takes ${inputs.map((d) => d.name).join(', ')}; ` +
                      `expected z${model.conditional ? ' and label' : ''}.`);
    }
    const batch = Number(z.shape[0]);
    if (!(batch > 0)) throw new Error(`${file}: its input z has shape [${Array.from(z.shape)}], not a fixed batch.`);
    const decoder = new LiteRtDecoder(litert, compiled, runner, batch, model);
    decoder.openBatch = openBatch;
    return decoder;
  }

  async runBatch(z, labels, n) {
    const {Tensor} = this.litert;
    const inputs = {z: new Tensor(z, [n, this.latentDim])};
    if (this.conditional) inputs.label = new Tensor(labels, [n]);
    let out;
    try {
      out = await this.runner.run(inputs);
    } finally {
      for (const t of Object.values(inputs)) t.delete();
    }
    try {
      return out.image.toTypedArray();  // a copy out of the WebAssembly heap
    } finally {
      for (const t of Object.values(out)) t.delete();
    }
  }

  async run(z, labels, n) {
    const b = this.batchSize;
    if (b === n) return this.runBatch(z, labels, n);
    // n latents in chunks of the model's batch b, the last one zero-padded.
    const result = new Float32Array(n * this.imageSize);
    for (let start = 0; start < n; start += b) {
      const count = Math.min(b, n - start);
      const zc = new Float32Array(b * this.latentDim);
      zc.set(z.subarray(start * this.latentDim, (start + count) * this.latentDim));
      let lc = null;
      if (this.conditional) {
        lc = new Int32Array(b);
        lc.set(labels.subarray(start, start + count));
      }
      const out = await this.runBatch(zc, lc, b);
      result.set(out.subarray(0, count * this.imageSize), start * this.imageSize);
    }
    return result;
  }
}

// --- TFLite flatbuffer: fix an open batch -------------------------------------------
// A .tflite file is a flatbuffer (schema: tensorflow/compiler/mlir/lite/schema/schema.fbs).
// Its tensors carry `shape` (static, 1 for an open dimension) and `shape_signature` (-1
// for it). LiteRT.js 2.5 checks inputs against the signature and cannot resize an input,
// so an open batch never matches; and a graph output written by a RESHAPE whose target
// shape is computed at run time (Keras' Reshape layer with an open batch: SHAPE,
// STRIDED_SLICE, PACK) is allocated at run time, outside the buffer LiteRT.js reads.
// `fixOpenBatch` edits the file's bytes in memory, in place, without changing an
// operator or a weight: every -1 of a shape_signature becomes its shape entry (1), and
// an output written by such a RESHAPE is read from the RESHAPE's input instead (the same
// numbers in the same row-major order). Returns whether the batch was open.
const MODEL = {operatorCodes: 1, subgraphs: 2, signatureDefs: 7};
const OPERATOR_CODE = {deprecatedBuiltinCode: 0, builtinCode: 3};
const SUBGRAPH = {tensors: 0, outputs: 2, operators: 3};
const TENSOR = {shape: 0, shapeSignature: 7};
const OPERATOR = {opcodeIndex: 0, inputs: 1, outputs: 2};
const SIGNATURE_DEF = {outputs: 1, subgraphIndex: 4};
const TENSOR_MAP = {tensorIndex: 1};
const BUILTIN_RESHAPE = 22;

export function fixOpenBatch(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const i32 = (pos) => view.getInt32(pos, true);
  const u32 = (pos) => view.getUint32(pos, true);
  const field = (table, index) => {
    const vtable = table - i32(table);
    const at = 4 + 2 * index;
    const offset = at < view.getUint16(vtable, true) ? view.getUint16(vtable + at, true) : 0;
    return offset ? table + offset : 0;
  };
  const scalar = (table, index, read) => {
    const pos = field(table, index);
    return pos ? read(pos) : 0;
  };
  const vector = (table, index) => {
    const pos = field(table, index);
    if (!pos) return null;
    const start = pos + u32(pos);
    return {length: u32(start), at: (i) => start + 4 + 4 * i};
  };
  const ints = (v) => (v ? Array.from({length: v.length}, (_, i) => i32(v.at(i))) : []);
  const tables = (table, index) => {
    const v = vector(table, index);
    return v ? Array.from({length: v.length}, (_, i) => v.at(i) + u32(v.at(i))) : [];
  };

  const root = u32(0);
  const builtin = tables(root, MODEL.operatorCodes).map((code) => Math.max(
    scalar(code, OPERATOR_CODE.builtinCode, i32), scalar(code, OPERATOR_CODE.deprecatedBuiltinCode, (p) => view.getInt8(p))));
  const signatures = tables(root, MODEL.signatureDefs);
  let open = false;
  tables(root, MODEL.subgraphs).forEach((subgraph, index) => {
    const tensors = tables(subgraph, SUBGRAPH.tensors);
    for (const tensor of tensors) {
      const signature = vector(tensor, TENSOR.shapeSignature);
      const shape = vector(tensor, TENSOR.shape);
      if (!signature || !shape || signature.length !== shape.length) continue;
      for (let i = 0; i < signature.length; i++) {
        if (i32(signature.at(i)) === -1) {
          view.setInt32(signature.at(i), i32(shape.at(i)), true);
          open = true;
        }
      }
    }
    if (!open) return;
    const outputs = vector(subgraph, SUBGRAPH.outputs);
    const operators = tables(subgraph, SUBGRAPH.operators);
    const computed = new Set(operators.flatMap((op) => ints(vector(op, OPERATOR.outputs))));
    for (const op of operators) {
      if (builtin[scalar(op, OPERATOR.opcodeIndex, u32)] !== BUILTIN_RESHAPE) continue;
      const [source, target] = ints(vector(op, OPERATOR.inputs));
      const [result] = ints(vector(op, OPERATOR.outputs));
      if (!computed.has(target)) continue;  // a constant target shape: allocated ahead, as LiteRT.js needs
      for (let i = 0; outputs && i < outputs.length; i++) {
        if (i32(outputs.at(i)) === result) view.setInt32(outputs.at(i), source, true);
      }
      for (const def of signatures) {
        if (scalar(def, SIGNATURE_DEF.subgraphIndex, u32) !== index) continue;
        for (const map of tables(def, SIGNATURE_DEF.outputs)) {
          const pos = field(map, TENSOR_MAP.tensorIndex);
          if (pos && u32(pos) === result) view.setUint32(pos, source, true);
        }
      }
    }
  });
  return open;
}

// One call at a time per decoder: the pad, the grids and window.vae.decode share it.
class Serialized {
  constructor(decoder) {
    this.decoder = decoder;
    this.queue = Promise.resolve();
  }

  // Resolves to the images (a Float32Array) with `decodeMs`: the runtime's own time for
  // this call, without the wait for earlier calls in the queue.
  run(z, labels, n) {
    const result = this.queue.then(async () => {
      const start = performance.now();
      const images = await this.decoder.run(z, labels, n);
      images.decodeMs = performance.now() - start;
      return images;
    });
    this.queue = result.catch(() => {});
    return result;
  }

  // The runtime's own call, for timing: waits until the queue is empty first.
  async idle() {
    await this.queue;
    return this.decoder;
  }
}

// Starts importing a runtime's JavaScript early (the page calls this before the
// manifest arrives); failures surface when the runtime is used.
export function preload(runtime) {
  (runtime === 'ort' ? loadOrt() : loadLiteRtModule()).catch(() => {});
}

// A decoder for `spec` (one of RUNTIME_SPECS) from the file's verified bytes.
export async function createDecoder(spec, bytes, model) {
  const decoder = spec.runtime === 'ort'
    ? await OrtDecoder.create(bytes, model)
    : await LiteRtDecoder.create(bytes, model, spec.file);
  return new Serialized(decoder);
}
