// Builds web/dist/, the static page `vae-tf explore` serves: the page's own files from
// src/ and the runtimes' JavaScript and WebAssembly from node_modules/ (installed by
// `npm ci` from package-lock.json; nothing is fetched at run time, no CDN). Writes
// dist/build.json, the list of files `vae-tf explore` checks before serving.
//
//   npm ci --prefix web && npm run --prefix web build

import {copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync} from 'node:fs';
import {dirname, join, relative} from 'node:path';
import {fileURLToPath} from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, 'src');
const dist = join(here, 'dist');
const modules = join(here, 'node_modules');

// [package, file inside the package, destination in dist/, runtime it belongs to]
const VENDOR = [
  ['onnxruntime-web', 'dist/ort.wasm.min.mjs', 'vendor/ort/ort.wasm.min.mjs', 'onnx'],
  ['onnxruntime-web', 'dist/ort-wasm-simd-threaded.mjs', 'vendor/ort/ort-wasm-simd-threaded.mjs', 'onnx'],
  ['onnxruntime-web', 'dist/ort-wasm-simd-threaded.wasm', 'vendor/ort/ort-wasm-simd-threaded.wasm', 'onnx'],
  ['@litertjs/core', 'dist/index.js', 'vendor/litert/core.js', 'litert'],
  ['@litertjs/wasm-utils', 'dist/index.js', 'vendor/litert/wasm-utils.js', 'litert'],
  // LiteRT.js picks the relaxed-SIMD build where the browser has it, else the compat one.
  ['@litertjs/core', 'wasm/litert_wasm_internal.js', 'vendor/litert/wasm/litert_wasm_internal.js', 'litert'],
  ['@litertjs/core', 'wasm/litert_wasm_internal.wasm', 'vendor/litert/wasm/litert_wasm_internal.wasm', 'litert'],
  ['@litertjs/core', 'wasm/litert_wasm_compat_internal.js', 'vendor/litert/wasm/litert_wasm_compat_internal.js', 'litert'],
  ['@litertjs/core', 'wasm/litert_wasm_compat_internal.wasm', 'vendor/litert/wasm/litert_wasm_compat_internal.wasm', 'litert'],
];

function fail(message) {
  console.error(`web build: ${message}`);
  process.exit(1);
}

function listFiles(dir) {
  return readdirSync(dir, {withFileTypes: true}).flatMap((entry) => {
    const path = join(dir, entry.name);
    return entry.isDirectory() ? listFiles(path) : [path];
  });
}

if (!existsSync(modules)) fail('web/node_modules is missing: run `npm ci --prefix web` first.');

rmSync(dist, {recursive: true, force: true});
mkdirSync(dist, {recursive: true});

const files = {};
for (const path of listFiles(src)) {
  const rel = relative(src, path);
  mkdirSync(dirname(join(dist, rel)), {recursive: true});
  copyFileSync(path, join(dist, rel));
  files[rel] = {size: statSync(path).size, part: 'page'};
}

const packages = {};
for (const [pkg, file, dest, runtime] of VENDOR) {
  const from = join(modules, pkg, file);
  if (!existsSync(from)) {
    fail(`${pkg}/${file} is missing from node_modules: run \`npm ci --prefix web\` (the lockfile pins the versions).`);
  }
  mkdirSync(dirname(join(dist, dest)), {recursive: true});
  copyFileSync(from, join(dist, dest));
  files[dest] = {size: statSync(from).size, part: runtime};
  packages[pkg] = JSON.parse(readFileSync(join(modules, pkg, 'package.json'), 'utf8')).version;
}

writeFileSync(join(dist, 'build.json'), JSON.stringify({
  format_version: 1,
  built: new Date().toISOString(),
  packages,
  files,
}, null, 1) + '\n');

const total = Object.values(files).reduce((s, f) => s + f.size, 0);
console.log(`web build: ${Object.keys(files).length} files, ${(total / 1e6).toFixed(1)} MB in ${relative(process.cwd(), dist) || dist}`);
for (const [pkg, version] of Object.entries(packages)) console.log(`  ${pkg} ${version}`);
