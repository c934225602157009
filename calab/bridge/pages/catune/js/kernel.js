// Kernel shape <-> time constants (spec bridge-and-apps.md §5.1.3) and the band-pass
// cutoffs (§5.1.7).  The user tunes peak time and FWHM; the taus are derived.

/** Peak time (s) of h(t) = exp(-t/td) - exp(-t/tr). */
export function peakTime(tr, td) {
  return ((tr * td) / (td - tr)) * Math.log(td / tr);
}

function kernelValue(t, tr, td) {
  return Math.exp(-t / td) - Math.exp(-t / tr);
}

function bisect(f, lo, hi) {
  let flo = f(lo);
  for (let i = 0; i < 80; i++) {
    const mid = 0.5 * (lo + hi);
    const fm = f(mid);
    if ((fm > 0) === (flo > 0)) {
      lo = mid;
      flo = fm;
    } else {
      hi = mid;
    }
  }
  return 0.5 * (lo + hi);
}

/** Full width at half maximum (s) of the double exponential, by bisection. */
export function fwhm(tr, td) {
  const tp = peakTime(tr, td);
  const half = 0.5 * kernelValue(tp, tr, td);
  const f = (t) => kernelValue(t, tr, td) - half;
  const t1 = bisect(f, 0, tp);
  let hi = tp * 2 + td;
  while (f(hi) > 0) hi *= 2;
  const t2 = bisect(f, tp, hi);
  return t2 - t1;
}

// FWHM/peak ratio as a function of k = td/tr on a log-spaced table (k 1.001 .. 10000).
const TABLE = (() => {
  const n = 300;
  const lo = Math.log(1.001);
  const hi = Math.log(10000);
  const logk = [];
  const ratio = [];
  for (let i = 0; i < n; i++) {
    const lk = lo + ((hi - lo) * i) / (n - 1);
    const k = Math.exp(lk);
    const tr = (k - 1) / (k * Math.log(k)); // peak time 1
    logk.push(lk);
    ratio.push(fwhm(tr, k * tr));
  }
  return { logk, ratio };
})();

/** Taus (s) for a peak time and FWHM (s), or null when no kernel has that shape. */
export function tausFromShape(peak, width) {
  const r = width / peak;
  const { logk, ratio } = TABLE;
  if (!(r >= ratio[0] && r <= ratio[ratio.length - 1])) return null;
  let i = 1;
  while (i < ratio.length - 1 && ratio[i] < r) i++;
  const f = (r - ratio[i - 1]) / (ratio[i] - ratio[i - 1]);
  const k = Math.exp(logk[i - 1] + f * (logk[i] - logk[i - 1]));
  const tr = (peak * (k - 1)) / (k * Math.log(k));
  return { tauRise: tr, tauDecay: k * tr };
}

/** Peak-normalised kernel sampled at 1/fs over 5·td: {t: seconds[], h: values[]}. */
export function kernelCurve(tr, td, fs) {
  const n = Math.max(2, Math.ceil(5 * td * fs));
  const t = new Array(n);
  const h = new Array(n);
  let peak = 0;
  for (let i = 0; i < n; i++) {
    t[i] = i / fs;
    h[i] = kernelValue(t[i], tr, td);
    peak = Math.max(peak, h[i]);
  }
  for (let i = 0; i < n; i++) h[i] /= peak || 1;
  return { t, h };
}

/** Band-pass cutoffs (Hz) derived from the kernel. */
export function cutoffs(tr, td, fs) {
  return { hp: 1 / (2 * Math.PI * td * 16), lp: Math.min(4 / (2 * Math.PI * tr), fs / 2) };
}

/** AR(2) coefficients exported with the parameters (spec §1.7). */
export function ar2(tr, td, fs) {
  const dt = 1 / fs;
  const decayRoot = Math.exp(-dt / td);
  const riseRoot = Math.exp(-dt / tr);
  return { g1: decayRoot + riseRoot, g2: -decayRoot * riseRoot, decayRoot, riseRoot, dt };
}
