// The live explorers: the edit explorer (sample, t, direction, method, strength) and the
// interpolation explorer (two samples, lerp or slerp, a point on the path), computed in the page.
// live.js imports this module when the reader opens an explorer; until then nothing is loaded.
//
// Each explorer keeps one request "wanted" (the controls' selection) and computes it first; a newer
// request aborts an older computation between two network runs (latest wins), and its network runs
// go before any other (the networks run in two workers, runtime.js). When the wanted image is shown,
// the other strengths (points) of the same selection are computed in the background, nearest first,
// two at once (one per worker), so that moving the slider afterwards shows a finished image (unless
// the configuration says "prefetch": false, as benchmarks/live_explorers.py does to time uncached moves).

import * as rt from "./runtime.js";
import * as S from "./sampler.js";

const DISPLAY_SIZE = 256;  // as labkit.widgets.player: small images enlarged to about this many pixels
const GAP = 2;  // mid-grey pixels between the sample and the edit, as labkit.widgets.edit

function element(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) node.append(child);
  return node;
}

function choice(label, options, value) {
  const select = element("select", { ariaLabel: label });
  for (const [text, v] of options) select.append(element("option", { textContent: text, value: String(v) }));
  select.value = String(value);
  return [element("label", { textContent: `${label} `, style: "margin-right:0.8em" }, [select]), select];
}

/** Python's format(x, ".{p}g"), near enough for labels: p significant digits, no trailing zeros. */
function g(x, p) {
  return String(Number(x.toPrecision(p)));
}

/** Images (C, H, W) in [-1, 1], side by side with GAP columns of mid-grey, onto a canvas. */
function draw(canvas, images, shape) {
  const [c, h, w] = shape, width = images.length * w + (images.length - 1) * GAP;
  canvas.width = width; canvas.height = h;
  const scale = Math.max(1, Math.floor(DISPLAY_SIZE / Math.max(h, w)));
  canvas.style.width = `${width * scale}px`;
  const pixels = new ImageData(width, h);
  pixels.data.fill(128);  // the gap: mid-grey
  for (let i = 3; i < pixels.data.length; i += 4) pixels.data[i] = 255;  // opaque
  images.forEach((image, k) => {
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const at = 4 * (y * width + k * (w + GAP) + x);
        for (let ch = 0; ch < 3; ch++) {
          const v = image[(c === 1 ? 0 : ch) * h * w + y * w + x];
          pixels.data[at + ch] = Math.round(Math.min(1, Math.max(0, (v + 1) / 2)) * 255);
        }
      }
    }
  });
  canvas.getContext("2d").putImageData(pixels, 0, 0);
}

/** What an explorer computes, and when: the wanted key first, then prefetch(wanted) keys, as many
 *  at once as the page has network workers. */
class Scheduler {
  constructor(explorer) {
    this.explorer = explorer; this.wanted = null; this.pending = null; this.running = new Set(); this.stopped = false;
  }

  /** at: when the reader moved the control (the input event's timeStamp), so that latencies count
   *  any wait for the page's thread too. */
  request(key, at = performance.now()) {
    this.wanted = key;
    this.pending = { key, at, cached: this.explorer.cached(key) };
    if (this.pending.cached) this.explorer.show(key);
    else this.explorer.status(`computing ${this.explorer.describe(key)} …`);
    this.pump();
  }

  /** Whether key is worth computing now: it is wanted, or it fills the wanted selection in the background. */
  useful(key) {
    const explorer = this.explorer, wanted = this.wanted;
    if (this.stopped) return false;
    return key === wanted || (explorer.config.prefetch !== false && explorer.cached(wanted)
                              && explorer.strip(wanted).includes(key));
  }

  pump() {
    if (this.stopped) return;
    const explorer = this.explorer, wanted = this.wanted;
    if (!explorer.cached(wanted)) {
      if (!this.running.has(wanted)) this.start(wanted);
      return;
    }
    if (explorer.config.prefetch === false) return;  // the benchmark's uncached moves
    while (this.running.size < explorer.parallel) {
      const key = explorer.prefetch(wanted, this.running);
      if (key === null) return;
      this.start(key);
    }
  }

  start(key) {
    this.running.add(key);
    const net = this.explorer.net.with(() => key === this.wanted);
    this.explorer.compute(key, () => !this.useful(key), net).then(() => {
      if (key === this.wanted) this.explorer.show(key);
      else if (this.explorer.cached(this.wanted)) this.explorer.display(this.wanted);  // e.g. a path's length in H
    }, (error) => {
      if (error instanceof S.Aborted || this.stopped) return;
      this.stopped = true;
      this.explorer.fail(error);
    }).finally(() => {
      this.running.delete(key);
      this.pump();
    });
  }
}

/** Results that computations running at once share (a latent, a reference image): each is computed
 *  once; one whose computation failed or was aborted is forgotten, so that the next asker computes it. */
class Shared {
  constructor() { this.promises = new Map(); this.values = new Map(); }

  get(key, make) {
    if (!this.promises.has(key)) {
      const promise = make().then((value) => { this.values.set(key, value); return value; });
      promise.catch(() => this.promises.delete(key));
      this.promises.set(key, promise);
    }
    return this.promises.get(key);
  }

  value(key) { return this.values.get(key); }
}

class Live {
  constructor(root, config, ui) {
    this.root = root; this.config = config; this.ui = ui; this.worker = new Scheduler(this);
    this.images = new Map(); this.latents = new Shared();
    this.timings = { opened: Number(root.dataset.openedAt || performance.now()), latencies: [] };
    this.canvas = element("canvas", { style: "image-rendering:pixelated;max-width:100%;display:block" });
    this.statusLine = element("div", { className: "labkit-live-status", style: "font-size:0.9em;min-height:1.3em" });
  }

  async load() {
    const { entry, net } = await rt.model(this.config.model);
    if (this.config.weights && this.config.weights !== entry.weights) {
      throw new Error("this page was built with other weights than the model shipped with it; rebuild the book");
    }
    this.model = entry; this.net = net; this.noise = await rt.noise(this.config.model);
    this.parallel = rt.workers();  // background images computed at once
    this.size = entry.sample_shape.reduce((a, b) => a * b);
  }

  cached(key) { return this.images.has(key); }

  status(text) { this.statusLine.textContent = text; }

  fail(error) {
    this.root.dataset.liveState = "error";
    this.status("");
    this.ui.append(element("div", { className: "labkit-live-error", style: "color:#b00020",
      textContent: `The live explorer stopped: ${error.message}. The static player shows precomputed frames.` }));
    for (const player of this.root.querySelectorAll(".labkit-frames")) player.hidden = false;
    console.warn("labkit live explorer:", error);
  }

  /** Draw key's image; record how long after the request it appeared. */
  show(key) {
    this.display(key);
    this.root.dataset.liveShown = key;
    this.root.dataset.liveShownCount = String(Number(this.root.dataset.liveShownCount || 0) + 1);
    const pending = this.worker.pending;
    if (pending && pending.key === key) {
      this.timings.latencies.push({ key, ms: performance.now() - pending.at, cached: pending.cached });
      if (this.timings.firstImage === undefined) {
        this.timings.firstImage = performance.now() - this.timings.opened;
        rt.widen();  // the other network workers start now, not during the first image
        for (const player of this.root.querySelectorAll(".labkit-frames")) player.hidden = true;
        this.root.dataset.liveState = "ready";
      }
      this.worker.pending = null;
      this.status("");
    }
  }

  /** x_t of a seed at timestep t: its noise, run by DDIM (η = 0) down to t (labkit.diffusion.sample_at). */
  latent(seed, t, abort, net = this.net) {
    return this.latents.get(`${seed}|${t}`, async () => {
      const noise = this.noise(seed)(0), first = S.timesteps(this.model, this.config.num_steps)[0];
      return t === first ? Float32Array.from(noise)
        : S.ddim(net, this.model, this.config.num_steps, noise, 1, { tTo: t, abort });
    });
  }

  /** The keys of key's strip (every strength, or point) not computed yet and not in `running`, nearest first. */
  prefetch(wanted, running = new Set()) {
    const at = this.strip(wanted).indexOf(wanted);
    const order = this.strip(wanted).map((key, i) => [Math.abs(i - at), key]).sort((a, b) => a[0] - b[0]);
    return order.map(([, key]) => key).find((key) => !this.cached(key) && !running.has(key)) ?? null;
  }

  request(event) { this.worker.request(this.key(), event?.timeStamp); }

  /** For tests and the benchmark: the image shown now, and its key. */
  api() {
    return { key: () => this.key(), shown: () => this.root.dataset.liveShown, timings: this.timings,
             image: () => Array.from(this.images.get(this.key())?.image || []),
             reference: () => Array.from(this.images.get(this.key())?.reference || []),
             factors: () => this.images.get(this.key())?.factors || null,
             filled: () => this.strip(this.key()).filter((key) => this.cached(key)).length,
             workers: () => this.parallel };
  }
}

class EditLive extends Live {
  async start() {
    await this.load();
    const c = this.config, bases = await rt.bases(c.model);
    this.basis = (seed, t) => bases(c.num_steps, seed, t, c.k);
    this.boostBelow = c.boost_below === null ? null : Math.trunc(c.boost_below * this.model.num_train_timesteps);
    const seeds = c.seeds.filter((s) => this.model.noise.seeds.includes(s));
    const times = c.t_fractions.map((f) => [f, S.timestepAt(this.model, f, c.num_steps)])
      .filter(([, t]) => seeds.length && seeds.every((s) => this.basis(s, t) !== null));
    if (!times.length) throw new Error(`no local bases are shipped for these samples (k = ${c.k}, ${c.num_steps} steps)`);
    if (c.model === (await rt.manifest()).readout.model) this.readout = await rt.readout();
    const [sampleLabel, seed] = choice("sample", seeds.map((s) => [String(s), s]), seeds[0]);
    const [tLabel, t] = choice("t", times.map(([f, step]) => [`${f} T (t = ${step})`, step]), times[0][1]);
    const [dirLabel, direction] = choice("direction", Array.from({ length: c.k }, (_, i) => [`v${i + 1}`, i]), 0);
    const [methodLabel, method] = choice("method", [["guidance", "guidance"], ["naive", "naive"]], c.method);
    this.controls = { seed, t, direction, method };
    this.slider = element("input", { type: "range", min: 0, max: c.strengths.length - 1, step: 1,
                                     value: c.strength_index, ariaLabel: "strength", style: "flex:1 1 auto;max-width:20em" });
    this.label = element("span");
    this.factorLines = element("div", { style: "font-size:0.9em;font-family:monospace;white-space:pre" });
    this.ui.append(element("div", {}, [sampleLabel, tLabel, dirLabel, methodLabel]), this.canvas,
      element("div", { textContent: "left: the sample; right: the edit", style: "font-size:0.9em" }),
      element("div", { style: "display:flex;align-items:center;gap:0.5em" },
              [element("span", { textContent: "strength" }), this.slider, this.label]),
      this.factorLines, this.statusLine);
    for (const control of [seed, t, direction, method]) control.addEventListener("change", (event) => this.request(event));
    this.slider.addEventListener("input", (event) => this.request(event));
    this.request();
  }

  key() {
    const { seed, t, direction, method } = this.controls;
    return [seed.value, t.value, direction.value, method.value, this.slider.value].join("|");
  }

  parse(key) {
    const [seed, t, direction, method, strength] = key.split("|");
    return { seed: Number(seed), t: Number(t), direction: Number(direction), method, strength: Number(strength) };
  }

  strengthLabel(i) {
    const gamma = Math.round(this.config.strengths[i] * 1e4) / 1e4;
    return `γ = ${gamma >= 0 ? "+" : ""}${g(gamma === 0 ? 0 : gamma, 6)}`;
  }

  describe(key) {
    const k = this.parse(key);
    return `v${k.direction + 1}, ${k.method}, ${this.strengthLabel(k.strength)}`;
  }

  /** The finished image of a latent at t: DDIM to x₀ with the quality boost (labkit.editing.edit). */
  async finish(x, seed, t, abort, net) {
    if (t === 0) return x;
    return S.ddim(net, this.model, this.config.num_steps, x, 1,
                  { tFrom: t, etaBelow: this.boostBelow, noiseDraw: this.noise(seed), abort });
  }

  async compute(key, abort, net = this.net) {
    const c = this.config, { seed, t, direction, method, strength } = this.parse(key);
    this.references = this.references || new Shared();
    this.firsts = this.firsts || new Shared();
    const xt = await this.latent(seed, t, abort, net);
    const v = this.basis(seed, t)[direction], gamma = c.strengths[strength];
    const edit = async () => {
      // γ = 0 leaves x_t as it is (x + 0·(…) = x, bit for bit, in both methods): the image is the sample's
      if (gamma === 0) return null;
      if (method === "naive") return this.finish(S.naiveEdit(xt, v, gamma), seed, t, abort, net);
      // guidance's first step is the same for every strength of this (sample, t, direction): computed once
      const first = await this.firsts.get(`${seed}|${t}|${direction}`, async () => {
        S.check(abort);
        return S.guidanceDifference(net, this.model, xt, t, v, c.delta);
      });
      const edited = await S.xSpaceGuidance(net, this.model, xt, t, v, gamma,
                                            { delta: c.delta, nIter: c.n_iter, abort, first });
      return this.finish(edited, seed, t, abort, net);
    };
    // the sample's own image and the edit at once: with two workers, each runs while the other waits
    const [reference, edited] = await Promise.all([
      this.references.get(`${seed}|${t}`, () => this.finish(xt, seed, t, abort, net)), edit()]);
    const image = edited ?? reference;
    let factors = null;
    if (this.readout) {
      const both = new Float32Array(2 * image.length);
      both.set(reference.map((x) => Math.min(1, Math.max(-1, x))));
      both.set(image.map((x) => Math.min(1, Math.max(-1, x))), image.length);
      factors = await this.readout(both, 2, net.urgent);
    }
    this.images.set(key, { image, reference, factors });
  }

  /** The keys of every strength of key's selection. */
  strip(key) {
    const k = this.parse(key);
    return this.config.strengths.map((_, i) => [k.seed, k.t, k.direction, k.method, i].join("|"));
  }

  display(key) {
    const { image, reference, factors } = this.images.get(key);
    draw(this.canvas, [reference, image], this.model.sample_shape);
    this.label.textContent = this.strengthLabel(this.parse(key).strength);
    if (factors) {
      const line = (name, f) => `${name}: ` + Object.entries(f)
        .map(([n, v]) => `${n.replace("_", " ")} ${typeof v === "number" ? v.toFixed(2) : v}`).join(", ");
      this.factorLines.textContent = `${line("sample", factors[0])}\n${line("edit  ", factors[1])}`;
    }
  }
}

class InterpolationLive extends Live {
  async start() {
    await this.load();
    const c = this.config, seeds = this.model.noise.seeds;
    this.t = S.timestepAt(this.model, c.t_fraction, c.num_steps);
    this.times = S.linspace01(c.n);
    const methods = c.methods.filter((m) => m === "lerp" || m === "slerp");
    if (!methods.length) throw new Error("only lerp and slerp run live");
    const [aLabel, a] = choice("sample A", seeds.map((s) => [String(s), s]), c.seed_a);
    const [bLabel, b] = choice("sample B", seeds.map((s) => [String(s), s]), c.seed_b);
    const [methodLabel, method] = choice("method", methods.map((m) => [m, m]), methods[0]);
    this.controls = { a, b, method };
    this.slider = element("input", { type: "range", min: 0, max: c.n - 1, step: 1, value: 0, ariaLabel: "point",
                                     style: "flex:1 1 auto;max-width:20em" });
    this.label = element("span");
    this.lengths = element("div", { style: "font-size:0.9em" });
    this.ui.append(element("div", { textContent: `t = ${this.t} (${c.t_fraction} T)`, style: "font-weight:bold" }),
      element("div", {}, [aLabel, bLabel, methodLabel]), this.canvas,
      element("div", { style: "display:flex;align-items:center;gap:0.5em" },
              [element("span", { textContent: "point" }), this.slider, this.label]),
      this.lengths, this.statusLine);
    for (const control of [a, b, method]) control.addEventListener("change", (event) => this.request(event));
    this.slider.addEventListener("input", (event) => this.request(event));
    this.request();
  }

  key() {
    const { a, b, method } = this.controls;
    return [a.value, b.value, method.value, this.slider.value].join("|");
  }

  parse(key) {
    const [a, b, method, point] = key.split("|");
    return { a: Number(a), b: Number(b), method, point: Number(point) };
  }

  describe(key) {
    return `point ${this.parse(key).point + 1} of ${this.config.n}`;
  }

  async path(k, abort, net) {
    const [xa, xb] = await Promise.all([this.latent(k.a, this.t, abort, net), this.latent(k.b, this.t, abort, net)]);
    return this.times.map((s) => (k.method === "lerp" ? S.lerp(xa, xb, s) : S.slerp(xa, xb, s)));
  }

  async compute(key, abort, net = this.net) {
    const k = this.parse(key), point = (await this.path(k, abort, net))[k.point];
    let h = null;
    const onStep = (t, result) => { if (t === this.t) h = Float32Array.from(result.h); };
    const image = await S.ddim(net, this.model, this.config.num_steps, point, 1, { tFrom: this.t, onStep, abort });
    this.images.set(key, { image, h, norm: S.norm(point) });
  }

  /** The keys of every point of key's path. */
  strip(key) {
    const k = this.parse(key);
    return this.times.map((_, i) => [k.a, k.b, k.method, i].join("|"));
  }

  /** Σ ‖f(p_{i+1}) − f(p_i)‖ over the path's points (labkit.geometry.curve_length), or null if one is missing. */
  length(points) {
    if (points.some((p) => !p)) return null;
    let total = 0;
    for (let i = 1; i < points.length; i++) {
      let sum = 0;
      for (let j = 0; j < points[i].length; j++) sum += (points[i][j] - points[i - 1][j]) ** 2;
      total += Math.sqrt(sum);
    }
    return total;
  }

  display(key) {
    const k = this.parse(key), shown = this.images.get(key);
    draw(this.canvas, [shown.image], this.model.sample_shape);
    this.label.textContent = `point ${k.point + 1} of ${this.config.n}: ‖x_t‖ = ${g(shown.norm, 3)}`;
    const keys = this.strip(key);
    const xa = this.latents.value(`${k.a}|${this.t}`), xb = this.latents.value(`${k.b}|${this.t}`);
    const path = this.times.map((s) => (k.method === "lerp" ? S.lerp(xa, xb, s) : S.slerp(xa, xb, s)));
    const inH = this.length(keys.map((key) => this.images.get(key)?.h));
    this.lengths.textContent = `${k.method}: length in X ${g(this.length(path), 4)}, in H `
      + `${inH === null ? "(when every point is computed)" : g(inH, 4)} (typical ‖x_t‖ ≈ √n = ${g(Math.sqrt(this.size), 3)})`;
  }
}

/** Turn the explorer in `root` (its data-labkit-live configuration) live; resolves when it shows its first image. */
export async function open(root, ui) {
  const config = JSON.parse(root.dataset.labkitLive);
  const Kind = { edit: EditLive, interpolation: InterpolationLive }[config.explorer];
  if (!Kind) throw new Error(`unknown explorer ${config.explorer}`);
  const live = new Kind(root, config, ui);
  root.labkitLive = live.api();
  live.status("loading the model …");
  ui.append(live.statusLine);
  await live.start();
  return live;
}
