'use strict';
// Values on the wire are MessagePack (PROTOCOL.md §4, §7). Integers that do
// not fit a JS number exactly come back as BigInt; BigInts go out as 64-bit
// integers (outside int64 ∪ uint64 they are refused with a RangeError, never
// rounded); integer-valued numbers go out as msgpack integers at any size, so
// a Python or C peer sees `int`, not `float`. -0 goes out as the float64 -0.0
// (msgpackr alone writes the integer 0, losing the sign and the type).

const { Packr, addExtension } = require('msgpackr');

const packr = new Packr({
  useRecords: false, // plain msgpack maps, readable by every peer
  mapsAsObjects: true,
  int64AsType: 'auto', // numbers within ±2^53, BigInt beyond
  encodeUndefinedAsNil: true, // a handler returning nothing answers nil
  moreTypes: false,
});

// -0 is replaced by this marker before packing; msgpackr hands it to the
// extension below, which writes the 9 bytes of float64 -0.0 itself (no ext
// header: a pack function that returns nothing has written its own bytes).
class NegativeZero {}
const NEGATIVE_ZERO = new NegativeZero();
// The extension type is never written. msgpackr also registers it for
// decoding, process-wide; -2 is reserved by the MessagePack spec for
// predefined types, so no peer sends it and no application registers it, and
// reading one fails as any unknown type does.
const UNUSED_EXT_TYPE = 0xfe;
addExtension({
  Class: NegativeZero,
  type: UNUSED_EXT_TYPE,
  pack(_marker, allocateForWrite) {
    const { target, targetView, position } = allocateForWrite(9);
    target[position] = 0xcb;
    targetView.setFloat64(position + 1, -0);
  },
  unpack() {
    throw new Error(`Unknown extension type ${UNUSED_EXT_TYPE}`);
  },
});

const MAX_DEPTH = 100; // PROTOCOL.md §7: deeper nesting is refused by peers anyway

// msgpackr writes integer numbers outside 32 bits as float64; those become
// BigInt before packing so they are written as int64/uint64, and -0 becomes
// the NEGATIVE_ZERO marker. Copy-on-write: a value with no such number is
// packed as it is, without a copy.
function wideIntegers(value, depth) {
  if (typeof value === 'function' || typeof value === 'symbol') throw new Unsendable();
  if (typeof value === 'number') {
    if (value === 0) return Object.is(value, -0) ? NEGATIVE_ZERO : value;
    return Number.isInteger(value) && (value > 0xffffffff || value < -0x80000000) && Number.isSafeInteger(value)
      ? BigInt(value)
      : value;
  }
  if (value === null || typeof value !== 'object' || depth > MAX_DEPTH) return value;
  if (Array.isArray(value)) {
    let copy = null;
    for (let i = 0; i < value.length; i++) {
      const v = value[i];
      const w = wideIntegers(v, depth + 1);
      if (w !== v && copy === null) copy = value.slice(0, i);
      if (copy !== null) copy.push(w);
    }
    return copy || value;
  }
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return value; // Buffers, Dates, Maps: packed as they are
  let copy = null;
  for (const key of Object.keys(value)) {
    const v = value[key];
    const w = wideIntegers(v, depth + 1);
    if (w !== v) {
      if (copy === null) copy = { ...value };
      copy[key] = w;
    }
  }
  return copy || value;
}

// Functions and symbols have no MessagePack form; msgpackr would send them
// as nil. Found on the fast pass; the message is built only then.
class Unsendable extends Error {}

/** The first function or symbol in `value`: its kind and where, as `[1].cb` (or ''). */
function whereUnsendable(value, at, depth) {
  if (typeof value === 'function' || typeof value === 'symbol') return { at, kind: typeof value };
  if (value === null || typeof value !== 'object' || depth > MAX_DEPTH) return null;
  const proto = Object.getPrototypeOf(value);
  if (!Array.isArray(value) && proto !== Object.prototype && proto !== null) return null;
  for (const key of Object.keys(value)) {
    const found = whereUnsendable(value[key], Array.isArray(value) ? `${at}[${key}]` : `${at}.${key}`, depth + 1);
    if (found !== null) return found;
  }
  return null;
}

/** Encodes one value. Throws a TypeError for a function or a symbol in it. */
function pack(value) {
  let wide;
  try {
    wide = wideIntegers(value, 0);
  } catch (e) {
    if (!(e instanceof Unsendable)) throw e;
    const { at, kind } = whereUnsendable(value, '', 0) || { at: '', kind: 'function' };
    throw new TypeError(`cannot send a ${kind}${at ? ` (at ${at})` : ''}: MessagePack has no ${kind} type`);
  }
  return packr.pack(wide);
}

/** Decodes one value (the buffer must be owned by the caller: bin values may share it). */
function unpack(buffer) {
  return packr.unpack(buffer);
}

module.exports = { pack, unpack };
