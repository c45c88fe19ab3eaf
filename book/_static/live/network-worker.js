// A dedicated worker that runs the exported networks with onnxruntime-web, off the page's thread.
// runtime.js starts one per core it uses (two): a static book is not cross-origin isolated, so one
// wasm module cannot use threads, but two workers, each with its own single-threaded onnxruntime-web,
// run two networks at once (the two halves of an x-space-guidance step, or two background images).
// Everything comes from the book's own generated/ folder.
//
// Messages in: {id, op: "load", file} (create a session for generated/<file>) and
// {id, op: "run", file, feeds: {name: {data: Float32Array, dims}}}. Out: {id, outputs: {name: Float32Array}}
// or {id, error: message}. runtime.js sends a worker one run at a time.

const GENERATED = new URL("./generated/", import.meta.url);
const sessions = new Map();
let ort = null;

async function runtime() {
  if (!ort) {
    const module = await import(new URL("ort/ort.wasm.min.mjs", GENERATED).href);
    module.env.wasm.wasmPaths = new URL("ort/", GENERATED).href;
    module.env.wasm.numThreads = 1;  // threads need a cross-origin-isolated page; a static book is not one
    ort = module;
  }
  return ort;
}

async function load(file) {
  if (!sessions.has(file)) {
    const ort = await runtime();
    sessions.set(file, await ort.InferenceSession.create(new URL(file, GENERATED).href, { executionProviders: ["wasm"] }));
  }
}

async function run(file, feeds) {
  const ort = await runtime(), session = sessions.get(file);
  if (!session) throw new Error(`${file} is not loaded in this worker`);
  const tensors = {};
  for (const [name, { data, dims }] of Object.entries(feeds)) tensors[name] = new ort.Tensor("float32", data, dims);
  const result = await session.run(tensors), outputs = {};
  for (const name of session.outputNames) outputs[name] = result[name].data;
  return outputs;
}

self.onmessage = async ({ data: message }) => {
  try {
    if (message.op === "load") {
      await load(message.file);
      self.postMessage({ id: message.id });
    } else if (message.op === "run") {
      const outputs = await run(message.file, message.feeds);
      // hand the arrays over rather than copy them, where each owns its buffer
      const owned = Object.values(outputs).filter((a) => a.byteOffset === 0 && a.byteLength === a.buffer.byteLength);
      self.postMessage({ id: message.id, outputs }, owned.map((a) => a.buffer));
    } else {
      throw new Error(`unknown request ${message.op}`);
    }
  } catch (error) {
    self.postMessage({ id: message.id, error: error?.message ?? String(error) });
  }
};
