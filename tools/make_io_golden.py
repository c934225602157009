#!/usr/bin/env python
"""Golden files for calab's IO layer, written by the published ``calab==0.3.0``.

The reference package lives in its own virtual environment (default ``.venv-ref``; set
``CALAB_REF_PYTHON`` to another interpreter) and is only ever run in a subprocess,
isolated with ``python -I`` so the working tree's ``calab`` cannot shadow it.

Usage::

    .venv/bin/python tools/make_io_golden.py           # (re)write tests/golden_io/, then check
    .venv/bin/python tools/make_io_golden.py --check   # only check, in a temporary directory

What it produces (``tests/golden_io/``; all small, committed):

* ``in_*.npy`` -- inputs, generated here with a fixed seed;
* ``ref_*.npy`` + ``ref_*_metadata.json`` -- written by the reference ``save_for_tuning``;
* ``export_v1_0.json`` / ``export_v1_1.json`` / ``export_v1_2.json`` -- CaTune exports of
  the three schema versions, and ``ref_export_params.json`` (what the reference's
  ``load_export_params`` returns for each);
* ``ref_decon_filter_{off,on}.npy`` -- the reference's ``deconvolve_from_export``;
* ``ref_convert_{caiman,minian}.npy`` + sidecars -- ``calab convert`` of files built with
  h5py / zarr from ``in_convert.npy``;
* ``ref_cli_*.txt`` -- stdout of the reference's ``calab info``;
* ``manifest.json`` -- versions and what each file is.

What it checks (both directions, bit for bit):

* ours -> ours and reference -> ours: our ``save_for_tuning`` of every input writes the
  same bytes as the reference; our ``load_tuning_data`` reads the reference's files;
* ours -> reference: the reference's ``load_tuning_data`` reads files we wrote, arrays
  identical and metadata equal; the reference's ``calab info`` accepts them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden_io"
REF_PYTHON = Path(os.environ.get("CALAB_REF_PYTHON", ROOT / ".venv-ref" / "bin" / "python"))

# The reference side: reads one JSON job from stdin, runs it, prints a JSON answer.
_REF_WORKER = r"""
import json, sys
import numpy as np
import calab
job = json.load(sys.stdin)
op = job["op"]
if op == "version":
    print(json.dumps({"calab": calab.__version__, "numpy": np.__version__}))
elif op == "save":
    traces = np.load(job["input"])
    calab.save_for_tuning(traces, job["fs"], job["stem"], metadata=job.get("metadata"))
    print("{}")
elif op == "load":
    traces, meta = calab.load_tuning_data(job["stem"])
    np.save(job["out"], traces)
    print(json.dumps({"metadata": meta, "dtype": str(traces.dtype), "shape": list(traces.shape)}))
elif op == "export":
    print(json.dumps({name: calab.load_export_params(path) for name, path in job["paths"].items()}))
elif op == "decon":
    traces = np.load(job["traces"])
    activity = calab.deconvolve_from_export(traces, job["params"])
    np.save(job["out"], activity)
    print(json.dumps({"shape": list(np.shape(activity))}))
else:
    raise SystemExit("unknown op " + op)
"""


def _ref_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["CALAB_BACKEND"] = ""
    return env


def run_reference(job: dict, cwd: Path) -> dict:
    """Run one job in the reference interpreter; returns its JSON answer."""
    completed = subprocess.run(
        [str(REF_PYTHON), "-I", "-c", _REF_WORKER],
        input=json.dumps(job), capture_output=True, text=True, cwd=cwd, env=_ref_env(), check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"reference job {job['op']} failed:\n{completed.stderr}")
    return json.loads(completed.stdout)


def run_reference_cli(args: list[str], cwd: Path, *, borrow_loaders: bool = False) -> subprocess.CompletedProcess:
    """Run the reference's ``calab`` command (its ``calab._cli.main``).

    ``borrow_loaders``: the reference venv holds only calab 0.3.0 and its dependencies;
    its loaders need h5py/zarr, which are then taken from *this* interpreter's
    site-packages, appended after the reference's own paths (so the reference's calab
    and numpy still win, and nothing is installed into its venv).
    """
    extra = ""
    if borrow_loaders:
        import sysconfig

        paths = sysconfig.get_paths()
        extra = f"sys.path.append({paths['purelib']!r}); sys.path.append({paths['platlib']!r}); "
    code = f"import sys; {extra}from calab._cli import main; sys.argv[0] = 'calab'; sys.exit(main())"
    return subprocess.run(
        [str(REF_PYTHON), "-I", "-c", code, *args],
        capture_output=True, text=True, cwd=cwd, env=_ref_env(), check=False,
    )


# --------------------------------------------------------------------------- inputs
def make_inputs(directory: Path) -> None:
    """Deterministic inputs covering the dtype/shape/layout cases of save_for_tuning."""
    rng = np.random.default_rng(20240917)
    np.save(directory / "in_basic.npy", rng.standard_normal((3, 40)))                     # float64 2-D
    np.save(directory / "in_single_f32.npy", rng.standard_normal(25).astype(np.float32))  # 1-D float32
    np.save(directory / "in_int16.npy", rng.integers(-500, 500, (2, 16)).astype(np.int16))
    np.save(directory / "in_fortran_be.npy", np.asfortranarray(rng.standard_normal((4, 12)).astype(">f8")))
    special = rng.standard_normal((2, 10))
    special[0, 3], special[1, 7], special[1, 0] = np.nan, np.inf, -0.0
    np.save(directory / "in_special.npy", special)                                       # NaN/inf/-0.0
    # Deconvolution input: two cells, a few calcium transients, a little noise.
    t = np.arange(300) / 30.0
    kernel = np.exp(-t / 0.5) - np.exp(-t / 0.05)
    spikes = np.zeros((2, 300))
    spikes[0, [30, 95, 180]] = 1.0
    spikes[1, [60, 61, 200, 260]] = [1.0, 0.5, 2.0, 1.0]
    calcium = np.array([np.convolve(s, kernel)[:300] for s in spikes])
    np.save(directory / "in_decon.npy", calcium + 0.02 * rng.standard_normal((2, 300)) + 0.3)
    np.save(directory / "in_convert.npy", rng.random((3, 30)).astype(np.float32))


SAVE_CASES = {
    # stem: (input file, fs, metadata)
    "ref_basic": ("in_basic.npy", 30.0, {"subject": "mouse_01", "session": "day3"}),
    "ref_single": ("in_single_f32.npy", 20, None),
    "ref_int16": ("in_int16.npy", 15.5, {"nested": {"a": [1, 2.5, None]}, "flag": True}),
    "ref_fortran_be": ("in_fortran_be.npy", 7.5, None),
    "ref_special": ("in_special.npy", 30.0, {"num_cells": 99, "note": "m\u00e4use \u2192 \U0001f42d", "dtype": "x"}),
}


def export_json(version: str) -> dict:
    """A CaTune export as the web app writes it (schema 1.0.0, 1.1.0 or 1.2.0)."""
    parameters: dict = {
        "tau_rise_s": 0.05123456789, "tau_decay_s": 0.5, "lambda": 0.01, "sampling_rate_hz": 30.0,
    }
    if version >= "1.1.0":
        parameters["filter_enabled"] = version == "1.2.0"
    if version >= "1.2.0":
        parameters.update({"t_peak_s": 0.112, "fwhm_s": 0.61})
    dt = 1 / 30.0
    d, r = np.exp(-dt / 0.5), np.exp(-dt / parameters["tau_rise_s"])
    return {
        "schema_version": version,
        "catune_version": "0.3.0",
        "export_date": "2025-03-01T12:00:00.000Z",
        "parameters": parameters,
        "ar2_coefficients": {"g1": d + r, "g2": -(d * r), "decayRoot": d, "riseRoot": r, "dt": dt},
        "formulation": {"model": "y = K s + b + noise", "objective": "(see numerics spec)"},
        "metadata": {"source_filename": "in_decon.npy", "num_cells": 2, "num_timepoints": 300},
    }


def write_exports(directory: Path) -> None:
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        name = "export_v" + "_".join(version.split(".")[:2]) + ".json"
        (directory / name).write_text(json.dumps(export_json(version), indent=2))
    # Same as 1.1.0 but with the filter off: the unfiltered deconvolution case.


def build_convert_inputs(directory: Path) -> dict[str, Path]:
    """A CaImAn HDF5 file and a Minian-style Zarr group holding in_convert.npy."""
    import h5py
    import zarr

    traces = np.load(directory / "in_convert.npy")
    caiman = directory / "cai_session.hdf5"
    with h5py.File(caiman, "w") as handle:
        handle.create_dataset("estimates/C", data=traces, chunks=(1, 10), compression="gzip")
        handle.create_dataset("params/data/fr", data=np.float64(30.0))
    minian = directory / "min_session"
    group = zarr.open_group(str(minian), mode="w")
    array = group.create_array("C", shape=traces.shape, dtype=traces.dtype, chunks=(2, 16))
    array[:] = traces
    return {"caiman": caiman, "minian": minian}


# --------------------------------------------------------------------------- generation
def generate(golden: Path) -> None:
    if golden.exists():
        shutil.rmtree(golden)
    golden.mkdir(parents=True)
    make_inputs(golden)
    write_exports(golden)
    for stem, (source, fs, metadata) in SAVE_CASES.items():
        run_reference({"op": "save", "input": source, "fs": fs, "stem": stem, "metadata": metadata}, golden)
    exports = {p.name: p.name for p in sorted(golden.glob("export_v*.json"))}
    params = run_reference({"op": "export", "paths": exports}, golden)
    (golden / "ref_export_params.json").write_text(json.dumps(params, indent=2, sort_keys=True))
    for label, export in (("off", "export_v1_1.json"), ("on", "export_v1_2.json")):
        run_reference(
            {"op": "decon", "traces": "in_decon.npy", "params": export, "out": f"ref_decon_filter_{label}.npy"},
            golden,
        )
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        shutil.copy(golden / "in_convert.npy", scratch)
        inputs = build_convert_inputs(scratch)
        for fmt, path in inputs.items():
            fs_args = ["--fs", "12.5"] if fmt == "minian" else []
            out = run_reference_cli(
                ["convert", path.name, "-f", fmt, *fs_args, "-o", f"ref_convert_{fmt}"], scratch, borrow_loaders=True
            )
            if out.returncode != 0:
                raise RuntimeError(out.stderr)
            (golden / f"ref_cli_convert_{fmt}.txt").write_text(out.stdout)
            for suffix in (".npy", "_metadata.json"):
                shutil.copy(scratch / f"ref_convert_{fmt}{suffix}", golden)
    for name, target in (("info_npy", "ref_basic.npy"), ("info_export", "export_v1_2.json"),
                         ("info_sidecar", "ref_basic_metadata.json"), ("info_1d", "in_single_f32.npy")):
        out = run_reference_cli(["info", target], golden)
        (golden / f"ref_cli_{name}.txt").write_text(out.stdout)
    versions = run_reference({"op": "version"}, golden)
    manifest = {
        "generated_by": "tools/make_io_golden.py",
        "reference": versions,
        "save_cases": {stem: {"input": src, "fs": fs, "metadata": md} for stem, (src, fs, md) in SAVE_CASES.items()},
        "decon": {"ref_decon_filter_off.npy": "in_decon.npy + export_v1_1.json",
                  "ref_decon_filter_on.npy": "in_decon.npy + export_v1_2.json"},
        "convert": {"caiman": "in_convert.npy as estimates/C, fr 30.0, gzip chunks (1, 10)",
                    "minian": "in_convert.npy as zarr v3 array C, chunks (2, 16), --fs 12.5"},
    }
    (golden / "manifest.json").write_text(json.dumps(manifest, indent=2))


# --------------------------------------------------------------------------- checks
def check(golden: Path) -> list[str]:
    """Compare ours with the reference in both directions; returns the failures."""
    sys.path.insert(0, str(ROOT))
    import calab

    failures: list[str] = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for stem, (source, fs, metadata) in SAVE_CASES.items():
            # reference -> ours: load the reference's files
            traces, meta = calab.load_tuning_data(golden / stem)
            reference_meta = json.loads((golden / f"{stem}_metadata.json").read_text())
            if meta != reference_meta:
                failures.append(f"{stem}: metadata differs after load")
            # ours -> ours, byte-compatible with the reference's writer
            ours = scratch / stem
            calab.save_for_tuning(np.load(golden / source), fs, ours, metadata=metadata)
            for suffix in (".npy", "_metadata.json"):
                mine = Path(f"{ours}{suffix}").read_bytes()
                theirs = (golden / f"{stem}{suffix}").read_bytes()
                if mine != theirs:
                    failures.append(f"{stem}{suffix}: bytes differ from the reference's file")
            reloaded, _ = calab.load_tuning_data(ours)
            if reloaded.tobytes() != traces.tobytes() or reloaded.dtype != traces.dtype:
                failures.append(f"{stem}: ours -> ours round trip not bit-exact")
            # ours -> reference
            answer = run_reference({"op": "load", "stem": stem, "out": f"{stem}_ref_loaded.npy"}, scratch)
            loaded = np.load(scratch / f"{stem}_ref_loaded.npy")
            if loaded.tobytes() != reloaded.tobytes() or answer["dtype"] != str(reloaded.dtype):
                failures.append(f"{stem}: reference loads our file with different data")
            if answer["metadata"] != meta:
                failures.append(f"{stem}: reference reads different metadata from our file")
            out = run_reference_cli(["info", f"{stem}.npy"], scratch)
            if out.returncode != 0 or "Sampling rate" not in out.stdout:
                failures.append(f"{stem}: reference 'calab info' rejects our file: {out.stderr}")
        params = json.loads((golden / "ref_export_params.json").read_text())
        for name, expected in params.items():
            if calab.load_export_params(golden / name) != expected:
                failures.append(f"{name}: load_export_params differs from the reference")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only verify; do not rewrite tests/golden_io")
    parser.add_argument("--golden", type=Path, default=GOLDEN)
    args = parser.parse_args()
    if not REF_PYTHON.exists():
        print(f"reference interpreter not found: {REF_PYTHON} (set CALAB_REF_PYTHON)", file=sys.stderr)
        return 2
    if not args.check:
        generate(args.golden)
        print(f"wrote {len(list(args.golden.iterdir()))} files to {args.golden}")
    failures = check(args.golden)
    for failure in failures:
        print("FAIL", failure)
    if not failures:
        print(f"OK: {len(SAVE_CASES)} save cases byte-identical to calab 0.3.0 and loadable both ways; "
              "export params identical")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
