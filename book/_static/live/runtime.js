// The live explorers' runtime: onnxruntime-web, the exported models, and the shipped noise and
// bases, all loaded from the book's own folder (generated/, written by scripts/export_onnx.py).
// Everything is loaded once per page, on first use.

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

function runtime() {
  return once("ort", async () => {
    const ort = await import(new URL("ort/ort.wasm.min.mjs", GENERATED).href);
    ort.env.wasm.wasmPaths = new URL("ort/", GENERATED).href;
    ort.env.wasm.numThreads = 1;  // threads need a cross-origin-isolated page; a static book is not one
    return ort;
  });
}

/** Let the page handle input and paint before the next network run: onnxruntime-web computes on the
 *  page's own thread, and its promises resolve without giving the page a turn, so without this a
 *  background fill would freeze the page until it ends. */
function yieldToPage() {
  // a message is an ordinary task, queued behind whatever the page has to do (scheduler.yield()
  // would jump that queue)
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => resolve();
    channel.port2.postMessage(null);
  });
}

/** A network: run(x, batch, t) → {out, h} (Float32Arrays). Runs one at a time: onnxruntime-web
 *  serves one run per session at once. */
class Net {
  constructor(ort, session, shape) {
    this.ort = ort; this.session = session; this.shape = shape; this.queue = Promise.resolve();
  }

  run(x, batch, t) {
    const job = this.queue.then(async () => {
      await yieldToPage();
      const feeds = { x: new this.ort.Tensor("float32", x, [batch, ...this.shape]),
                      t: new this.ort.Tensor("float32", new Float32Array([t]), [1]) };
      const result = await this.session.run(feeds);
      return { out: result.out.data, h: result.h.data };
    });
    this.queue = job.catch(() => {});
    return job;
  }
}

async function session(file) {
  const ort = await runtime();
  return ort.InferenceSession.create(new URL(file, GENERATED).href, { executionProviders: ["wasm"] });
}

/** The manifest entry of a model and its network. */
export function model(name) {
  return once(`model:${name}`, async () => {
    const entry = (await manifest()).models[name];
    if (!entry) throw new Error(`the model ${name} is not shipped with this book`);
    const ort = await runtime();
    return { entry, net: new Net(ort, await session(entry.file), entry.sample_shape) };
  });
}

/** The factor read-out: images (N, 3, 32, 32) in [-1, 1] → decoded factors, as labkit.readout.decode. */
export function readout() {
  return once("readout", async () => {
    const info = (await manifest()).readout;
    const ort = await runtime();
    const s = await session(info.file);
    return async (images, batch) => {
      const result = await s.run({ images: new ort.Tensor("float32", images, [batch, 3, 32, 32]) });
      const out = result.outputs.data, width = out.length / batch, rows = [];
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
