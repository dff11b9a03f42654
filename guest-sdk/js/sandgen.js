// Write sandgen plugins in JavaScript: plain generator functions, exported
// through sandgen's WIT contract (wit/generator.wit) with one call.
//
// A plugin is an ES module that exports the result of `plugin` as
// `generator`, the name of the WIT interface:
//
//     import { plugin } from "./sandgen.js";
//
//     export const generator = plugin({
//       count: { description: "yields 0..n", *iter(n) { for (let i = 0; i < n; i++) yield i; } },
//     });
//
// and is built into a component with componentize-js 0.23.0, against the
// world in guest-sdk/js/wit (sandgen's `plugin` world plus the environment
// import that `workerInfo` reads):
//
//     componentize-js app.js -w guest-sdk/js/wit -n resumable-plugin -d http -d fetch-event -o app.wasm
//
// What a generator is: each entry of `plugin`'s object is a generator, under
// its key, and is one of
// - a generator function (or any function that returns an iterable), called
//   afresh with the arguments for every pass;
// - `{ description, args, iter }`: the same, with a description for
//   `sandgen list` and a bincode schema for the arguments (see below);
// - `{ description, args, create }`: `create(args)` runs once, when the caller
//   creates the iterable, and returns an iterable object that is iterated
//   (`obj[Symbol.iterator]()`) for every pass, so state kept in it lives
//   across passes (an epoch counter, a shuffle seed, a cache).
// The arguments are the caller's one value (`undefined` when none were
// given); destructure an object in the parameter list. The initializer,
// `plugin(generators, { initialize(config) {...} })`, receives the config the
// same way, once per instance, before anything else.
//
// Encodings: the caller chooses JSON or bincode. Items are encoded from their
// value: with JSON as `JSON.stringify` writes them (a Uint8Array becomes an
// array of numbers); with bincode exactly as Rust's `serde_json::Value` would
// be written by bincode 2's standard configuration: a whole number as an
// unsigned (or, when negative, zigzag) integer, any other number as an f64, a
// string, boolean, array (length first), object or Map (a map), null or
// undefined (nothing), and a Uint8Array as a byte sequence (`serde_bytes`).
// An `array(data, shape, dtype)` is written as the array record (design
// section 13) in either encoding, and `tuple(a, b)` as Rust writes a tuple:
// its values one after another in bincode, an array in JSON.
// bincode carries no type tags, so bincode arguments are read by the entry's
// `args` schema: "int" (unsigned), "float", "string", "bool", `[schema]` for
// an array, and `{ key: schema }` for an object with those keys.
//
// Batching and errors: items are framed into batches of at most the host's
// `max-items` and `max-bytes`; a batch also closes after about a millisecond,
// so the items of a slow generator reach the caller promptly. A thrown error
// ends the pass: the items produced before it reach the caller first, then
// the error, whose message is the error and its stack.
//
// Anything the plugin prints goes to the host's log, never among items.

import { getEnvironment } from "wasi:cli/environment@0.2.3";

/** How long a batch may take before it is returned, in milliseconds. */
const BATCH_MS = 1;

const now =
  typeof performance !== "undefined" && performance.now ? () => performance.now() : () => Date.now();

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

/** Errors cross the WIT boundary as strings: anything else would trap. */
class PluginError {
  constructor(message) {
    this.message = message;
  }
}

/**
 * Returns the implementation of sandgen's `generator` interface that exports
 * `generators` (an object of name to entry) and runs `options.initialize`
 * (optional) with the config. Export it as `generator`.
 */
export function plugin(generators, options = {}) {
  const entries = new Map();
  for (const [name, spec] of Object.entries(generators)) {
    entries.set(name, entry(name, spec));
  }
  const initializer = options.initialize;
  if (initializer !== undefined && typeof initializer !== "function") {
    throw new TypeError("the initializer must be a function");
  }
  const state = { encoding: undefined };

  return {
    Iterable,
    Iterator,

    generators() {
      return [...entries.values()].map((e) => ({ name: e.name, description: e.description }));
    },

    initialize(encoding, config) {
      guard(() => {
        if (state.encoding !== undefined) {
          fail("`initialize` was called twice; it runs once per instance");
        }
        state.encoding = encoding;
        if (initializer === undefined) {
          if (config.length > 0) fail("this plugin takes no config, but one was given");
          return;
        }
        const value = decode(encoding, config, options.config, "config");
        try {
          initializer(value);
        } catch (e) {
          fail(`the initializer failed: ${describe(e)}`);
        }
      });
    },

    create(name, args) {
      return guard(() => {
        const encoding = state.encoding;
        if (encoding === undefined) fail("`create` was called before `initialize`");
        const e = entries.get(name);
        if (e === undefined) {
          const known = [...entries.keys()].join(", ") || "none";
          fail(`this plugin has no generator named \`${name}\`; it has: ${known}`);
        }
        const value = decode(encoding, args, e.args, `arguments for generator ${name}`);
        let source;
        if (e.create !== undefined) {
          let object;
          try {
            object = e.create(value);
          } catch (err) {
            fail(`creating generator ${name} failed: ${describe(err)}`);
          }
          if (object == null || typeof object[Symbol.iterator] !== "function") {
            fail(`creating generator ${name} failed: create() returned something that is not iterable`);
          }
          source = () => object;
          return new Iterable(source, encoding === "json", object);
        }
        source = () => e.iter(value);
        return new Iterable(source, encoding === "json");
      });
    },
  };
}

/** The WIT `iterable` resource: one per `create`. */
class Iterable {
  constructor(source, json, object) {
    this.source = source;
    this.json = json;
    // An object made by `create` (its `skipPasses`, if it has one).
    this.object = object;
  }

  /** `skip-passes`: `count` (a BigInt) passes at once, where the object can. */
  skipPasses(count) {
    return guard(() => {
      const object = this.object;
      if (object == null || typeof object.skipPasses !== "function") return false;
      try {
        return Boolean(object.skipPasses(Number(count)));
      } catch (e) {
        fail(describe(e));
      }
    });
  }

  iter() {
    return guard(() => {
      let items;
      try {
        const iterable = this.source();
        if (iterable == null || typeof iterable[Symbol.iterator] !== "function") {
          throw new TypeError("the generator returned something that is not iterable");
        }
        items = iterable[Symbol.iterator]();
      } catch (e) {
        fail(describe(e));
      }
      return new Iterator(items, this.json);
    });
  }
}

/** The WIT `iterator` resource: one pass. */
class Iterator {
  constructor(items, json) {
    this.items = items;
    this.json = json;
    this.error = undefined;
    this.over = false;
    this.index = 0;
    this.writer = new Writer();
  }

  skip(count) {
    return guard(() => skipItems(this, count));
  }

  next(maxItems, maxBytes) {
    return guard(() => {
      if (this.error !== undefined) {
        const error = this.error;
        this.error = "the pass already failed; its iterator is dead";
        fail(error);
      }
      if (this.over) return new Uint8Array(0);
      if (maxItems === 0) fail("`next` was called with max-items 0; it must be at least 1");
      const out = this.writer;
      out.reset();
      const encode = this.json ? writeJson : writeBincode;
      const deadline = now() + BATCH_MS;
      let count = 0;
      for (;;) {
        let step;
        try {
          step = this.items.next();
        } catch (e) {
          this.error = describe(e);
          break;
        }
        if (step.done) {
          this.over = true;
          break;
        }
        const start = out.reserveFrame();
        try {
          encode(step.value, out);
        } catch (e) {
          out.len = start - 4;
          const kind = this.json ? "JSON" : "bincode";
          this.error = `item ${this.index + count} of the pass cannot be written as ${kind}: ${e.message ?? e}`;
          break;
        }
        out.endFrame(start);
        count += 1;
        if (count >= maxItems || out.len >= maxBytes || now() >= deadline) break;
      }
      this.index += count;
      if (this.error !== undefined) {
        this.over = true;
        if (count === 0) {
          const error = this.error;
          this.error = "the pass already failed; its iterator is dead";
          fail(error);
        }
      }
      return out.take();
    });
  }
}

/**
 * The WIT `resume` interface (wit/resume.wit), the fast path of resuming: a
 * plugin built for the world `resumable-plugin` re-exports it,
 * `export { resume } from "./sandgen.js";`. `skip` drops the items before a
 * position without writing them; an object made by `create` with a method
 * `skipPasses(count)` that returns true moves on `count` passes at once.
 */
export const resume = {
  skip(it, count) {
    return it.skip(count);
  },
  skipPasses(it, count) {
    return it.skipPasses(count);
  },
};

/** `skip` of an iterator: up to `count` (a BigInt) items dropped unwritten,
 * for about a batch's time; how many, as a BigInt (0 once the pass is over). */
function skipItems(self, count) {
  if (self.error !== undefined) {
    const error = self.error;
    self.error = "the pass already failed; its iterator is dead";
    fail(error);
  }
  if (self.over) return 0n;
  const deadline = now() + BATCH_MS;
  let dropped = 0n;
  while (dropped < count) {
    let step;
    try {
      step = self.items.next();
    } catch (e) {
      self.error = describe(e);
      self.over = true;
      break;
    }
    if (step.done) {
      self.over = true;
      break;
    }
    dropped += 1n;
    // The clock is read every 64 items.
    if ((dropped & 63n) === 0n && now() >= deadline) break;
  }
  self.index += Number(dropped);
  if (self.error !== undefined && dropped === 0n) {
    const error = self.error;
    self.error = "the pass already failed; its iterator is dead";
    fail(error);
  }
  return dropped;
}

/** Runs `f`, turning a failure into the string that the WIT `err` carries. */
function guard(f) {
  try {
    return f();
  } catch (e) {
    throw e instanceof PluginError ? e.message : `sandgen helper failed: ${describe(e)}`;
  }
}

function fail(message) {
  throw new PluginError(message);
}

/** An error's message: its summary line, then its stack without the frames
 * of this helper and of the generated bindings. */
function describe(error) {
  if (error instanceof Error) {
    const stack = typeof error.stack === "string" ? error.stack : "";
    const frames = stack
      .split("\n")
      .filter((line) => line.length > 0 && !line.includes(HERE) && !line.includes("initializer.js:"));
    const summary = `${error.name}: ${error.message}`;
    return frames.length > 0 ? `${summary}\n${frames.join("\n")}` : summary;
  }
  let text;
  try {
    text = typeof error === "object" && error !== null ? JSON.stringify(error) : String(error);
  } catch {
    text = Object.prototype.toString.call(error);
  }
  return `uncaught ${typeof error}: ${text}`;
}

/** This file's name as stacks show it. */
const HERE = (() => {
  const line = (new Error().stack ?? "").split("\n")[0] ?? "";
  const match = /@(.*):\d+:\d+$/.exec(line);
  return match ? match[1] : "sandgen.js";
})();

function entry(name, spec) {
  if (typeof spec === "function") {
    if (isClass(spec)) {
      return { name, description: spec.description ?? "", args: spec.args, create: (a) => new spec(a) };
    }
    return { name, description: spec.description ?? "", args: spec.args, iter: spec };
  }
  if (spec === null || typeof spec !== "object") {
    throw new TypeError(`generator ${name} must be a function, a class or { iter } / { create }`);
  }
  const { description = "", args, iter, create } = spec;
  if ((typeof iter === "function") === (typeof create === "function")) {
    throw new TypeError(`generator ${name} needs exactly one of iter() and create()`);
  }
  return {
    name,
    description,
    args,
    iter: iter && ((a) => iter.call(spec, a)),
    create: create && ((a) => create.call(spec, a)),
  };
}

function isClass(f) {
  return /^class[\s{]/.test(Function.prototype.toString.call(f));
}

// --- Arguments --------------------------------------------------------------

function decode(encoding, bytes, schema, what) {
  if (bytes.length === 0) return undefined;
  if (encoding === "json") {
    let text;
    try {
      text = utf8Decoder.decode(bytes);
      return JSON.parse(text);
    } catch (e) {
      fail(`invalid ${what}: not JSON: ${e.message}`);
    }
  }
  if (schema === undefined) {
    fail(
      `invalid ${what}: bincode carries no types, so the generator needs an \`args\` schema ` +
        `("int", "float", "string", "bool", [schema], { key: schema }); or ask for the JSON encoding`,
    );
  }
  const reader = new Reader(bytes, what);
  const value = reader.read(schema, "args");
  if (reader.pos !== bytes.length) {
    reader.fail(`${bytes.length - reader.pos} trailing bytes after the value`);
  }
  return value;
}

class Reader {
  constructor(bytes, what) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
    this.what = what;
  }

  fail(message) {
    fail(`invalid ${this.what}: ${message}`);
  }

  take(n) {
    if (this.pos + n > this.bytes.length) this.fail("unexpected end of input");
    const at = this.pos;
    this.pos += n;
    return at;
  }

  varint() {
    const first = this.bytes[this.take(1)];
    if (first < 251) return first;
    if (first === 251) return this.view.getUint16(this.take(2), true);
    if (first === 252) return this.view.getUint32(this.take(4), true);
    if (first === 253) {
      const big = this.view.getBigUint64(this.take(8), true);
      if (big > BigInt(Number.MAX_SAFE_INTEGER)) return big;
      return Number(big);
    }
    this.fail(`invalid integer tag ${first}`);
  }

  string() {
    const n = Number(this.varint());
    const at = this.take(n);
    try {
      return utf8Decoder.decode(this.bytes.subarray(at, at + n));
    } catch (e) {
      this.fail(`a string is not UTF-8: ${e.message}`);
    }
  }

  read(schema, path) {
    if (schema === "int") return this.varint();
    if (schema === "float") return this.view.getFloat64(this.take(8), true);
    if (schema === "string") return this.string();
    if (schema === "bool") {
      const flag = this.bytes[this.take(1)];
      if (flag > 1) this.fail(`${path}: invalid bool ${flag}`);
      return flag === 1;
    }
    if (Array.isArray(schema) && schema.length === 1) {
      const n = Number(this.varint());
      const out = [];
      for (let i = 0; i < n; i++) out.push(this.read(schema[0], `${path}[${i}]`));
      return out;
    }
    if (schema !== null && typeof schema === "object" && !Array.isArray(schema)) {
      const n = Number(this.varint());
      const out = {};
      for (let i = 0; i < n; i++) {
        const key = this.string();
        if (!Object.hasOwn(schema, key)) this.fail(`${path} has no member named ${JSON.stringify(key)}`);
        out[key] = this.read(schema[key], `${path}.${key}`);
      }
      return out;
    }
    this.fail(`${path}: unknown schema ${JSON.stringify(schema)}; use "int", "float", "string", "bool", [schema] or { key: schema }`);
  }
}

// --- Arrays -----------------------------------------------------------------

// Every dtype of the array record, with its element size in bytes.
const DTYPES = {
  bool: 1, uint8: 1, int8: 1, uint16: 2, int16: 2, uint32: 4, int32: 4,
  uint64: 8, int64: 8, float16: 2, float32: 4, float64: 8,
};

// The dtype of each typed array.
const TYPED = [
  [Float32Array, "float32"], [Float64Array, "float64"], [Uint8Array, "uint8"],
  [Uint8ClampedArray, "uint8"], [Int8Array, "int8"], [Uint16Array, "uint16"],
  [Int16Array, "int16"], [Uint32Array, "uint32"], [Int32Array, "int32"],
  [BigUint64Array, "uint64"], [BigInt64Array, "int64"],
];

class SandgenArray {
  constructor(bytes, dtype, shape) {
    this.bytes = bytes;
    this.dtype = dtype;
    this.shape = shape;
  }

  toJSON() {
    return { dtype: this.dtype, shape: this.shape, data: this.bytes };
  }
}

class SandgenTuple {
  constructor(values) {
    this.values = values;
  }

  toJSON() {
    return this.values;
  }
}

/**
 * An n-dimensional array item over `data`, a typed array (its dtype taken
 * from its type unless `dtype` is given), an ArrayBuffer or a DataView
 * (give `dtype`), holding the elements in C (row-major) order; wasm is
 * little-endian, as the record is. `shape` is the dimensions. dtypes: bool,
 * uint8, int8, uint16, int16, uint32, int32, uint64, int64, float16,
 * float32, float64. The data is viewed, not copied, until the item is
 * written. A host reads it as a numpy array (`item_type=numpy.ndarray`).
 *
 *     yield tuple(array(new Float32Array([1, 2, 3, 4]), [2, 2]), label);
 */
export function array(data, shape, dtype) {
  let bytes;
  if (ArrayBuffer.isView(data)) {
    if (dtype === undefined) {
      const found = TYPED.find(([type]) => data instanceof type);
      if (found === undefined) throw new TypeError("give the dtype of a DataView's elements");
      dtype = found[1];
    }
    bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  } else if (data instanceof ArrayBuffer) {
    if (dtype === undefined) throw new TypeError("give the dtype of an ArrayBuffer's elements");
    bytes = new Uint8Array(data);
  } else {
    throw new TypeError(`an array's data must be a typed array or an ArrayBuffer, not ${typeof data}`);
  }
  if (!Object.hasOwn(DTYPES, dtype)) {
    throw new RangeError(`unknown dtype ${dtype}: use one of ${Object.keys(DTYPES).join(", ")}`);
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new TypeError(`shape must be an array of non-negative integers, not ${String(shape)}`);
  }
  const size = shape.reduce((n, d) => n * d, 1) * DTYPES[dtype];
  if (size !== bytes.length) {
    throw new RangeError(
      `an array of dtype ${dtype} and shape [${shape.join(", ")}] holds ${size} bytes, not ${bytes.length}`,
    );
  }
  if (dtype === "bool" && bytes.some((b) => b > 1)) {
    throw new RangeError("a bool array's bytes must be 0 or 1");
  }
  return new SandgenArray(bytes, dtype, shape.slice());
}

/** A tuple item: its values written one after another, as Rust writes a tuple. */
export function tuple(...values) {
  return new SandgenTuple(values);
}

// --- Items ------------------------------------------------------------------

/** A growable byte buffer of frames. */
class Writer {
  constructor() {
    this.buf = new Uint8Array(4096);
    this.view = new DataView(this.buf.buffer);
    this.len = 0;
  }

  reset() {
    this.len = 0;
  }

  reserve(n) {
    const need = this.len + n;
    if (need <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < need) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.buf.subarray(0, this.len));
    this.buf = grown;
    this.view = new DataView(grown.buffer);
  }

  /** Leaves room for a frame's length; returns where its item starts. */
  reserveFrame() {
    this.reserve(4);
    this.len += 4;
    return this.len;
  }

  endFrame(start) {
    const size = this.len - start;
    if (size > 0xffffffff) throw new RangeError("an item is larger than 4 GiB, the most a frame can hold");
    this.view.setUint32(start - 4, size, true);
  }

  /** The frames written since the last reset, as a new array. */
  take() {
    return this.buf.slice(0, this.len);
  }

  byte(b) {
    this.reserve(1);
    this.buf[this.len++] = b;
  }

  bytes(data) {
    this.reserve(data.length);
    this.buf.set(data, this.len);
    this.len += data.length;
  }

  string(s) {
    // UTF-8 takes at most 3 bytes per UTF-16 unit.
    this.reserve(s.length * 3);
    const { written } = utf8.encodeInto(s, this.buf.subarray(this.len));
    this.len += written;
    return written;
  }

  varint(n) {
    if (typeof n === "bigint") {
      if (n < 0n || n >= 1n << 64n) throw new RangeError(`${n} does not fit in 64 bits`);
      if (n <= BigInt(Number.MAX_SAFE_INTEGER)) return this.varint(Number(n));
      this.byte(253);
      this.reserve(8);
      this.view.setBigUint64(this.len, n, true);
      this.len += 8;
      return;
    }
    if (n < 251) {
      this.byte(n);
    } else if (n < 0x10000) {
      this.byte(251);
      this.reserve(2);
      this.view.setUint16(this.len, n, true);
      this.len += 2;
    } else if (n < 0x100000000) {
      this.byte(252);
      this.reserve(4);
      this.view.setUint32(this.len, n, true);
      this.len += 4;
    } else {
      this.byte(253);
      this.reserve(8);
      this.view.setBigUint64(this.len, BigInt(n), true);
      this.len += 8;
    }
  }
}

function jsonReplacer(_key, value) {
  if (value instanceof Uint8Array) return Array.from(value);
  if (typeof value === "bigint") return JSON.rawJSON ? JSON.rawJSON(value.toString()) : Number(value);
  if (value instanceof Map) return Object.fromEntries(value);
  return value;
}

function writeJson(item, out) {
  if (typeof item === "number") {
    if (!Number.isFinite(item)) throw new TypeError(`${item} is not a JSON number`);
    out.string(String(item));
    return;
  }
  const text = JSON.stringify(item, jsonReplacer);
  if (text === undefined) throw new TypeError(`an item of type ${typeof item} has no JSON form`);
  out.string(text);
}

function writeBincode(value, out) {
  switch (typeof value) {
    case "number":
      if (Number.isInteger(value) && Math.abs(value) <= Number.MAX_SAFE_INTEGER) {
        if (value >= 0) out.varint(value);
        else out.varint(BigInt(value) * -2n - 1n); // zigzag, as for an i64
      } else {
        out.reserve(8);
        out.view.setFloat64(out.len, value, true);
        out.len += 8;
      }
      return;
    case "string": {
      // The length goes first: write the string after a 9-byte gap, then
      // move it next to the length if that took fewer bytes.
      out.reserve(9);
      const at = out.len;
      out.len += 9;
      const n = out.string(value);
      out.len = at;
      out.varint(n);
      if (out.len !== at + 9) out.buf.copyWithin(out.len, at + 9, at + 9 + n);
      out.len += n;
      return;
    }
    case "boolean":
      out.byte(value ? 1 : 0);
      return;
    case "bigint":
      if (value >= 0n) out.varint(value);
      else if (value >= -(1n << 63n)) out.varint(value * -2n - 1n);
      else throw new RangeError(`${value} does not fit in 64 bits`);
      return;
    case "undefined":
      return;
    case "object":
      if (value === null) return;
      if (value instanceof SandgenArray) {
        writeBincode(value.dtype, out);
        out.varint(value.shape.length);
        for (const d of value.shape) out.varint(d);
        out.varint(value.bytes.length);
        out.bytes(value.bytes);
        return;
      }
      if (value instanceof SandgenTuple) {
        for (const v of value.values) writeBincode(v, out);
        return;
      }
      if (value instanceof Uint8Array) {
        out.varint(value.length);
        out.bytes(value);
        return;
      }
      if (value instanceof ArrayBuffer) {
        out.varint(value.byteLength);
        out.bytes(new Uint8Array(value));
        return;
      }
      if (Array.isArray(value)) {
        out.varint(value.length);
        for (const v of value) writeBincode(v, out);
        return;
      }
      if (value instanceof Map) {
        out.varint(value.size);
        for (const [k, v] of value) {
          if (typeof k !== "string") throw new TypeError(`a map key must be a string, not ${typeof k}`);
          writeBincode(k, out);
          writeBincode(v, out);
        }
        return;
      }
      {
        const keys = Object.keys(value);
        out.varint(keys.length);
        for (const k of keys) {
          writeBincode(k, out);
          writeBincode(value[k], out);
        }
      }
      return;
    default:
      throw new TypeError(`an item of type ${typeof value} cannot be written as bincode`);
  }
}

/**
 * This instance's place among the workers of its iterable: `{ id, count,
 * seed }` (`id` from 0; `seed` is `undefined` without one, and the
 * instance's random sources are then already seeded from it), from the
 * environment the host sets (`SANDGEN_WORKER_ID`, `SANDGEN_NUM_WORKERS`,
 * `SANDGEN_SEED`); worker 0 of 1 when they are not set. `shard(items)`
 * yields this worker's share of an iterable: every `count`-th item, from the
 * `id`-th, so that in the caller's default order the workers' items come in
 * the order of `items`.
 *
 *     *iter(path) { yield* workerInfo().shard(readLines(path)); }
 */
export function workerInfo() {
  const env = new Map(getEnvironment());
  const read = (name) => {
    const text = env.get(name);
    return text !== undefined && /^[0-9]+$/.test(text) ? text : undefined;
  };
  const id = Number(read("SANDGEN_WORKER_ID") ?? 0);
  const count = Math.max(Number(read("SANDGEN_NUM_WORKERS") ?? 1), 1);
  const seedText = read("SANDGEN_SEED");
  // A seed may not fit a Number exactly: a BigInt keeps all 64 bits.
  const seed = seedText === undefined ? undefined : BigInt(seedText);
  return {
    id,
    count,
    seed,
    *shard(items) {
      let i = 0;
      for (const item of items) {
        if (i % count === id) yield item;
        i++;
      }
    },
  };
}
