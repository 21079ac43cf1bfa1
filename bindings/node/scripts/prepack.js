'use strict';
// `npm pack` / `npm publish` step: puts a stripped copy of the library into
// lib/, so the tarball works on its own (no MULTIFROST_LIB). The library is
// MULTIFROST_LIB when set, else the repository build (cargo build --release).
// postpack.js removes the copy again, so tests in the checkout keep loading
// the current build rather than this snapshot.

const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const pkg = path.resolve(__dirname, '..');
const source = process.env.MULTIFROST_LIB
  ? path.resolve(process.env.MULTIFROST_LIB)
  : path.resolve(pkg, '..', '..', 'target', 'release', 'libmultifrost.so');
if (!fs.existsSync(source)) {
  console.error(
    `prepack: ${source} does not exist. Build the library first (cargo build --release ` +
      'in the repository root) or set MULTIFROST_LIB to a built libmultifrost.so.',
  );
  process.exit(1);
}
const dest = path.join(pkg, 'lib', 'libmultifrost.so');
fs.mkdirSync(path.dirname(dest), { recursive: true });
fs.copyFileSync(source, dest);
fs.chmodSync(dest, 0o755);
try {
  execFileSync('strip', ['--strip-unneeded', dest]);
} catch (e) {
  console.error(`prepack: warning: could not strip ${dest} (${e.message}); it keeps its debug info`);
}
console.error(`prepack: lib/libmultifrost.so from ${source} (${fs.statSync(dest).size} bytes)`);
