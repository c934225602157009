// .npy / .npz readers for the import wizard (spec bridge-and-apps.md §1.6, §5.0).

const DTYPES = {
  "<f8": Float64Array, "<f4": Float32Array, "<i4": Int32Array, "<i2": Int16Array,
  "<i1": Int8Array, "|i1": Int8Array, "<u4": Uint32Array, "<u2": Uint16Array,
  "<u1": Uint8Array, "|u1": Uint8Array,
};

/** Parse a .npy buffer into {data: Float64Array (C order), shape, dtype}. */
export function parseNpy(buffer) {
  const bytes = new Uint8Array(buffer);
  const magic = String.fromCharCode(...bytes.subarray(0, 6));
  if (magic !== "\x93NUMPY") throw new Error("Not a .npy file (bad magic bytes)");
  const major = bytes[6];
  const view = new DataView(buffer);
  const headerLength = major >= 2 ? view.getUint32(8, true) : view.getUint16(8, true);
  const start = major >= 2 ? 12 : 10;
  const header = new TextDecoder("latin1").decode(bytes.subarray(start, start + headerLength));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*True/.test(header);
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? "";
  const shape = shapeText.split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  if (!descr || descr.startsWith(">")) throw new Error(`Unsupported dtype ${descr} (big-endian or unknown)`);
  const Ctor = DTYPES[descr];
  if (!Ctor) throw new Error(`Unsupported dtype ${descr}`);
  const offset = start + headerLength;
  const count = shape.reduce((a, b) => a * b, 1);
  const raw = new Ctor(buffer.slice(offset, offset + count * Ctor.BYTES_PER_ELEMENT));
  let data = Float64Array.from(raw);
  if (fortran && shape.length === 2) {
    const [rows, cols] = shape;
    const c = new Float64Array(count);
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) c[i * cols + j] = data[j * rows + i];
    data = c;
  }
  return { data, shape, dtype: descr };
}

async function inflateRaw(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Parse a .npz (zip of .npy) into [{name, data, shape, dtype}]. */
export async function parseNpz(buffer) {
  const view = new DataView(buffer);
  const bytes = new Uint8Array(buffer);
  let eocd = -1;
  for (let i = bytes.length - 22; i >= Math.max(0, bytes.length - 65558); i--) {
    if (view.getUint32(i, true) === 0x06054b50) { eocd = i; break; }
  }
  if (eocd < 0) throw new Error("Not a .npz file (no zip directory)");
  const entries = view.getUint16(eocd + 10, true);
  let p = view.getUint32(eocd + 16, true);
  const arrays = [];
  for (let e = 0; e < entries; e++) {
    const method = view.getUint16(p + 10, true);
    const compressed = view.getUint32(p + 20, true);
    const nameLength = view.getUint16(p + 28, true);
    const extraLength = view.getUint16(p + 30, true);
    const commentLength = view.getUint16(p + 32, true);
    const local = view.getUint32(p + 42, true);
    const name = new TextDecoder().decode(bytes.subarray(p + 46, p + 46 + nameLength));
    p += 46 + nameLength + extraLength + commentLength;
    const dataStart = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
    let content = bytes.subarray(dataStart, dataStart + compressed);
    if (method === 8) content = await inflateRaw(content);
    else if (method !== 0) throw new Error(`Unsupported zip compression in ${name}`);
    const copy = content.slice().buffer;
    arrays.push({ name: name.replace(/\.npy$/, ""), ...parseNpy(copy) });
  }
  return arrays;
}
