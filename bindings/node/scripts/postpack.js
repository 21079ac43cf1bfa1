'use strict';
// Removes the copy prepack.js put into lib/ (see there).
const fs = require('node:fs');
const path = require('node:path');

fs.rmSync(path.resolve(__dirname, '..', 'lib', 'libmultifrost.so'), { force: true });
