// Example plugin in JavaScript: data-loading generators for ML training.
//
// Build (from the repository root; `tests/install-plugin-tools.sh` installs
// the pinned componentize-js into guest-sdk/js/node_modules):
//
//     guest-sdk/js/node_modules/.bin/componentize-js examples/js/app.js -w wit -n plugin -d http -d fetch-event -o target/example_js.wasm
//
// Run:
//
//     sandgen run target/example_js.wasm windows --args '{"text": "the quick brown fox jumps over the lazy dog", "window": 4}'

import { plugin, workerInfo } from "../../guest-sdk/js/sandgen.js";

/** A small seeded generator (mulberry32), so each epoch's order is reproducible. */
function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Yields 0..n in a new shuffled order each pass; the epoch lives in the object. */
class Epochs {
  constructor({ n, seed = 0 }) {
    this.n = n;
    this.seed = seed;
    this.epoch = 0;
  }

  *[Symbol.iterator]() {
    const order = Array.from({ length: this.n }, (_, i) => i);
    const next = random(this.seed * 1000003 + this.epoch);
    this.epoch += 1;
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(next() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    // Every worker draws the same order and yields its share of it.
    yield* workerInfo().shard(order);
  }
}

export const generator = plugin({
  windows: {
    description: "yields the windows of `window` words of `text`, `stride` apart (default: no overlap)",
    args: { text: "string", window: "int", stride: "int" },
    *iter({ text, window = 4, stride = window }) {
      const words = text.split(/\s+/).filter((w) => w.length > 0);
      const starts = [];
      for (let start = 0; start < words.length; start += stride) starts.push(start);
      // Several workers share the windows: each yields every n-th.
      for (const start of workerInfo().shard(starts)) {
        yield words.slice(start, start + window);
      }
    },
  },
  epochs: {
    description: "yields 0..n in a new shuffled order each pass, reproducible from seed",
    args: { n: "int", seed: "int" },
    create: (args) => new Epochs(args),
  },
  count: {
    description: "yields 0..n (small items, for benchmarks)",
    args: "int",
    *iter(n) {
      for (let i = 0; i < n; i++) yield i;
    },
  },
  blobs: {
    description: "yields n fresh byte arrays of `size` bytes (large items, for benchmarks)",
    args: { n: "int", size: "int" },
    *iter({ n, size }) {
      for (let i = 0; i < n; i++) yield new Uint8Array(size);
    },
  },
});

// The fast path of resuming (wit/resume.wit).
export { resume } from "../../guest-sdk/js/sandgen.js";
