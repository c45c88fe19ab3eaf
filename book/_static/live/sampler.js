// What labkit computes, in JavaScript: DDIM sampling with the quality boost, the naive edit,
// x-space guidance, lerp and slerp. Each function names the labkit function it follows.
//
// Latents are Float32Array batches (B·C·H·W numbers). Arithmetic is float32 as in torch: every
// elementwise result is rounded with Math.fround (a product or sum of two float32 numbers is exact
// in a double, so rounding it once gives torch's float32 result). Reductions (norms, dot products)
// add in another order than torch, so results agree to rounding, not bit for bit.
//
// `net` is {run(x, batch, t) -> Promise<{out, h}>}: the exported U-Net (scripts/export_onnx.py).
// `model` is its manifest entry: alphas_cumprod, final_alpha_cumprod, schedules, prediction_type.

const f32 = Math.fround;

export class Aborted extends Error {
  constructor() { super("superseded by a newer request"); this.name = "Aborted"; }
}

/** Throw Aborted if abort() says the computation is no longer wanted. */
export function check(abort) {
  if (abort && abort()) throw new Aborted();
}

/** The DDIM timesteps of a schedule, descending (labkit: model.timesteps(num_steps)). */
export function timesteps(model, numSteps) {
  const steps = model.schedules[String(numSteps)];
  if (!steps) throw new Error(`no ${numSteps}-step DDIM schedule shipped for this model`);
  return steps;
}

/** The DDIM timestep closest to fraction·T, the first of equals (labkit.diffusion.timestep_at). */
export function timestepAt(model, fraction, numSteps) {
  const target = fraction * model.num_train_timesteps;
  let best = null;
  for (const s of timesteps(model, numSteps)) {
    if (best === null || Math.abs(s - target) < Math.abs(best - target)) best = s;
  }
  return best;
}

/** ε from the U-Net's raw output (labkit: DiffusionModel.eps): ε = a v + s x for v-prediction. */
export function epsFromOutput(model, out, x, t) {
  if (model.prediction_type === "epsilon") return out;
  const abar = model.alphas_cumprod[t];
  const a = f32(Math.sqrt(abar)), s = f32(Math.sqrt(1 - abar));
  const eps = new Float32Array(out.length);
  if (model.prediction_type === "v_prediction") {
    for (let i = 0; i < out.length; i++) eps[i] = f32(a * out[i]) + f32(s * x[i]);
  } else {  // "sample": the network predicts x₀, ε = (x − a x₀)/s
    for (let i = 0; i < out.length; i++) eps[i] = f32(x[i] - f32(a * out[i])) / s;
  }
  return eps;
}

/** One step of diffusers' DDIMScheduler (prediction ε, no clipping) from t to t − T/n, in place.
 *  noise: the η-noise of one latent (shared by the batch), or null when eta is 0. */
export function ddimStep(model, numSteps, eps, t, x, eta, noise) {
  const prev = t - Math.floor(model.num_train_timesteps / numSteps);
  const at = f32(model.alphas_cumprod[t]);
  const ap = f32(prev >= 0 ? model.alphas_cumprod[prev] : model.final_alpha_cumprod);
  const bt = f32(1 - at), bp = f32(1 - ap);
  const variance = f32(f32(bp / bt) * f32(1 - f32(at / ap)));
  const std = f32(eta * f32(Math.sqrt(variance)));
  const sbt = f32(Math.sqrt(bt)), sat = f32(Math.sqrt(at)), sap = f32(Math.sqrt(ap));
  const dir = f32(Math.sqrt(f32(f32(1 - ap) - f32(std * std))));
  const n = noise ? noise.length : 1;
  for (let i = 0; i < x.length; i++) {
    const x0 = f32(f32(x[i] - f32(sbt * eps[i])) / sat);
    let next = f32(f32(sap * x0) + f32(dir * eps[i]));
    if (eta > 0) next = f32(next + f32(std * noise[i % n]));
    x[i] = next;
  }
  return x;
}

/** DDIM from timestep tFrom down to tTo (−1: x₀) for a batch (labkit.diffusion.ddim_sample with
 *  shared_noise=True): η = 0, and η = 1 on steps t ≤ etaBelow (null: never). noiseDraw(i) gives the
 *  i-th draw of the sample's seed; the η-steps use draws 0, 1, … in order, as torch's generator would.
 *  onStep(t, out) sees each step's network output before the step (h included). Returns a new array. */
export async function ddim(net, model, numSteps, x, batch, { tFrom = null, tTo = -1, etaBelow = null,
  noiseDraw = null, abort = null, onStep = null } = {}) {
  const steps = timesteps(model, numSteps);
  const from = tFrom === null ? steps[0] : tFrom;
  x = Float32Array.from(x);
  let draw = 0;
  for (const t of steps) {
    if (!(tTo < t && t <= from)) continue;
    check(abort);
    const result = await net.run(x, batch, t);
    if (onStep) onStep(t, result);
    const eta = etaBelow !== null && t <= etaBelow ? 1 : 0;
    const noise = eta > 0 ? noiseDraw(draw++) : null;
    ddimStep(model, numSteps, epsFromOutput(model, result.out, x, t), t, x, eta, noise);
  }
  return x;
}

/** x_t + γ v (labkit.editing.naive_edit), one latent. */
export function naiveEdit(x, v, gamma) {
  const g = f32(gamma), out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = f32(x[i] + f32(g * v[i]));
  return out;
}

/** ε(x + δ v, t) − ε(x, t), one latent: the step of x-space guidance before its factor γ. The two
 *  networks are two runs of one latent each, asked for at once, so that a net with two workers runs
 *  them in parallel (the same numbers as labkit's batch of two: each image is computed on its own). */
export async function guidanceDifference(net, model, x, t, v, delta = 1.0) {
  const d = f32(delta), n = x.length, plus = new Float32Array(n);
  for (let i = 0; i < n; i++) plus[i] = f32(x[i] + f32(d * v[i]));
  const [a, b] = await Promise.all([net.run(plus, 1, t), net.run(x, 1, t)]);
  const ea = epsFromOutput(model, a.out, plus, t), eb = epsFromOutput(model, b.out, x, t);
  const difference = new Float32Array(n);
  for (let i = 0; i < n; i++) difference[i] = f32(ea[i] - eb[i]);
  return difference;
}

/** x-space guidance (labkit.editing.x_space_guidance), one strength: n_iter times
 *  x ← x + γ [ε(x + δ v, t) − ε(x, t)]. The first step's difference does not depend on γ (every
 *  strength starts from the same x): pass it as `first` to reuse it across strengths. */
export async function xSpaceGuidance(net, model, x, t, v, gamma, { delta = 1.0, nIter = 16, abort = null,
  first = null } = {}) {
  const g = f32(gamma), n = x.length;
  x = Float32Array.from(x);
  for (let it = 0; it < nIter; it++) {
    check(abort);
    const difference = it === 0 && first ? first : await guidanceDifference(net, model, x, t, v, delta);
    for (let i = 0; i < n; i++) x[i] = f32(x[i] + f32(g * difference[i]));
  }
  return x;
}

/** torch.linspace(0, 1, n) in float32: the first half counts up from 0, the second down from 1. */
export function linspace01(n) {
  if (n === 1) return [0];
  const step = f32(1 / (n - 1)), out = [];
  for (let i = 0; i < n; i++) out.push(i < Math.floor(n / 2) ? f32(step * i) : f32(1 - f32(step * (n - 1 - i))));
  return out;
}

/** (1 − s) a + s b (labkit.geometry.lerp). */
export function lerp(a, b, s) {
  const t = f32(s), u = f32(1 - t), out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = f32(f32(u * a[i]) + f32(t * b[i]));
  return out;
}

export function norm(a) {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i] * a[i];
  return Math.sqrt(sum);
}

/** Spherical interpolation (labkit.geometry.slerp): sin((1 − s)Ω)/sin Ω · a + sin(sΩ)/sin Ω · b,
 *  lerp when a and b point the same way (Ω < 1e-4, labkit's float32 threshold). */
export function slerp(a, b, s) {
  const na = norm(a), nb = norm(b);
  if (!(na > 0 && nb > 0)) throw new Error("slerp: a and b must both be non-zero");
  let dot = 0;
  for (let i = 0; i < a.length; i++) dot += a[i] * b[i];
  const omega = f32(Math.acos(Math.min(1, Math.max(-1, f32(dot / (na * nb))))));
  if (omega < 1e-4) return lerp(a, b, s);
  if (omega > Math.PI - 1e-4) throw new Error("slerp: a and b point in opposite directions");
  const t = f32(s), sinO = f32(Math.sin(omega));
  const ca = f32(Math.sin(f32(f32(1 - t) * omega))), cb = f32(Math.sin(f32(t * omega)));
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = f32(f32(f32(ca * a[i]) + f32(cb * b[i])) / sinO);
  return out;
}
