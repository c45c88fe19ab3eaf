// The live explorers' runtime: the exported models, run by onnxruntime-web in dedicated workers
// (network-worker.js), and the shipped noise and bases, all loaded from the book's own folder
// (generated/, written by scripts/export_onnx.py). Everything is loaded once per page, on first use.

const GENERATED = new URL("./generated/", import.meta.url);
const memo = new Map();

function once(key, make) {
  if (!memo.has(key)) memo.set(key, make());
  return memo.get(key);
}

async function fetchOk(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`could not load ${url.pathname.split("/").pop()} (HTTP ${response.status})`);
  return response;
}

export function manifest() {
  return once("manifest", async () => (await fetchOk(new URL("manifest.json", GENERATED))).json());
}

/** One network-worker.js: request(op, fields) → a promise of its answer. */
class NetworkWorker {
  constructor() {
    this.worker = new Worker(new URL("./network-worker.js", import.meta.url), { type: "module" });
    this.pending = new Map(); this.next = 0; this.loaded = new Set(); this.busy = false; this.broken = null;
    this.worker.onmessage = ({ data }) => {
      const { resolve, reject } = this.pending.get(data.id);
      this.pending.delete(data.id);
      if (data.error !== undefined) reject(new Error(data.error)); else resolve(data.outputs);
    };
    // the script itself failed (not found, or a syntax error): every request fails
    this.worker.onerror = (event) => {
      event.preventDefault();
      this.broken = new Error(`the network worker failed: ${event.message || "it could not be loaded"}`);
      for (const { reject } of this.pending.values()) reject(this.broken);
      this.pending.clear();
    };
  }

  request(op, fields, transfer = []) {
    if (this.broken) return Promise.reject(this.broken);
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, op, ...fields }, transfer);
    });
  }
}

/** The page's network workers: a run goes to a free worker that holds its model; a run whose
 *  urgent() says so (the image the reader asked for) goes before background runs. One worker starts
 *  with the pool, the others when widen() is called (after the first image: each compiles
 *  onnxruntime-web's wasm and loads the models, which would slow the first image down). */
class Pool {
  constructor(size) {
    this.size = size; this.workers = [new NetworkWorker()]; this.queue = []; this.files = new Set();
  }

  widen() {
    while (this.workers.length < this.size) {
      const w = new NetworkWorker();
      this.workers.push(w);
      // a worker that cannot load a model stays out of its runs; the others go on
      for (const file of this.files) this.loadInto(w, file).catch(() => {});
    }
  }

  async loadInto(w, file) {
    await w.request("load", { file });
    w.loaded.add(file);
    this.dispatch();
  }

  /** Load generated/<file> in every worker; resolves when one can run it (the others follow). */
  load(file) {
    return once(`load:${file}`, () => {
      this.files.add(file);
      return Promise.any(this.workers.map((w) => this.loadInto(w, file)))
        .catch((error) => { throw error.errors ? error.errors[0] : error; });
    });
  }

  /** feeds: {name: {data: Float32Array, dims}} (copied now: the caller may change its arrays) → {name: Float32Array}. */
  run(file, feeds, urgent) {
    const copied = {};
    for (const [name, { data, dims }] of Object.entries(feeds)) copied[name] = { data: Float32Array.from(data), dims };
    return new Promise((resolve, reject) => {
      this.queue.push({ file, feeds: copied, urgent, resolve, reject });
      this.dispatch();
    });
  }

  dispatch() {
    for (const w of this.workers) {
      if (w.busy || w.broken) continue;
      const ready = this.queue.filter((job) => w.loaded.has(job.file));
      const job = ready.find((j) => j.urgent()) ?? ready[0];
      if (!job) continue;
      this.queue.splice(this.queue.indexOf(job), 1);
      w.busy = true;
      w.request("run", { file: job.file, feeds: job.feeds }, Object.values(job.feeds).map((f) => f.data.buffer))
        .then(job.resolve, job.reject)
        .finally(() => { w.busy = false; this.dispatch(); });
    }
    if (this.workers.every((w) => w.broken)) {
      for (const job of this.queue.splice(0)) job.reject(this.workers[0].broken);
    }
  }
}

function pool() {
  // two workers: the two halves of a guidance step at once; more would only compete for the cores
  return once("pool", () => new Pool(Math.max(1, Math.min(2, navigator.hardwareConcurrency || 2))));
}

/** How many networks the page runs at once (its workers, once widened). */
export function workers() {
  return pool().size;
}

/** Start every network worker (explorer.js calls it when an explorer shows its first image). */
export function widen() {
  pool().widen();
}

/** A network: run(x, batch, t) → {out, h} (Float32Arrays), in a worker. urgent() (default: never) puts a
 *  run before the background's; with(urgent) gives the same network with another urgency. */
class Net {
  constructor(file, shape, urgent = () => false) {
    this.file = file; this.shape = shape; this.urgent = urgent;
  }

  with(urgent) { return new Net(this.file, this.shape, urgent); }

  async run(x, batch, t) {
    const { out, h } = await pool().run(this.file, { x: { data: x, dims: [batch, ...this.shape] },
                                                     t: { data: new Float32Array([t]), dims: [1] } }, this.urgent);
    return { out, h };
  }
}

/** The manifest entry of a model and its network. */
export function model(name) {
  return once(`model:${name}`, async () => {
    const entry = (await manifest()).models[name];
    if (!entry) throw new Error(`the model ${name} is not shipped with this book`);
    await pool().load(entry.file);
    return { entry, net: new Net(entry.file, entry.sample_shape) };
  });
}

/** The factor read-out: images (N, 3, 32, 32) in [-1, 1] → decoded factors, as labkit.readout.decode. */
export function readout() {
  return once("readout", async () => {
    const info = (await manifest()).readout;
    await pool().load(info.file);
    return async (images, batch, urgent = () => false) => {
      const result = await pool().run(info.file, { images: { data: images, dims: [batch, 3, 32, 32] } }, urgent);
      const out = result.outputs, width = out.length / batch, rows = [];
      for (let b = 0; b < batch; b++) {
        const o = out.subarray(b * width, (b + 1) * width), row = {};
        for (const f of info.factors) {
          const [lo, hi] = f.slice;
          if (f.kind === "circular") {
            const h = Math.atan2(o[lo + 1], o[lo]) / (2 * Math.PI);
            row[f.name] = h - Math.floor(h);
          } else if (f.kind === "continuous") {
            const v = (f.high + f.low) / 2 + o[lo] * (f.high - f.low) / 2;
            row[f.name] = Math.min(f.high, Math.max(f.low, v));
          } else {
            let best = lo;
            for (let i = lo; i < hi; i++) if (o[i] > o[best]) best = i;
            row[f.name] = f.values[best - lo];
          }
        }
        rows.push(row);
      }
      return rows;
    };
  });
}

async function arrayBuffer(file) {
  return (await fetchOk(new URL(file, GENERATED))).arrayBuffer();
}

/** noise(seed) → draw(i): the i-th torch.randn draw of Generator(seed), shaped like one latent. */
export function noise(name) {
  return once(`noise:${name}`, async () => {
    const entry = (await manifest()).models[name];
    const data = new Float32Array(await arrayBuffer(entry.noise.file));
    const size = entry.sample_shape.reduce((a, b) => a * b), draws = entry.noise.draws;
    return (seed) => {
      const index = entry.noise.seeds.indexOf(seed);
      if (index < 0) throw new Error(`no noise shipped for seed ${seed}`);
      return (i) => {
        if (i >= draws) throw new Error(`only ${draws} noise draws are shipped per seed`);
        return data.subarray((index * draws + i) * size, (index * draws + i + 1) * size);
      };
    };
  });
}

function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1, exponent = (h >> 10) & 0x1f, fraction = h & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

/** basis(numSteps, seed, t, k) → k directions (Float32Array each), or null when none is shipped. */
export function bases(name) {
  return once(`bases:${name}`, async () => {
    const entry = (await manifest()).models[name];
    const half = new Uint16Array(await arrayBuffer(entry.bases.file));
    const size = entry.sample_shape.reduce((a, b) => a * b);
    return (numSteps, seed, t, k) => {
      const found = entry.bases.entries.find((e) => e.num_steps === numSteps && e.seed === seed && e.t === t && e.k === k);
      if (!found) return null;
      return Array.from({ length: k }, (_, i) => Float32Array.from(
        half.subarray(found.offset + i * size, found.offset + (i + 1) * size), halfToFloat));
    };
  });
}

/** Whether bases are shipped for (numSteps, seed, t, k), without loading them. */
export async function hasBasis(name, numSteps, seed, t, k) {
  const entry = (await manifest()).models[name];
  return Boolean(entry && entry.bases.entries.some((e) => e.num_steps === numSteps && e.seed === seed && e.t === t
                                                    && e.k === k));
}
