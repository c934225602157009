"""A new user's first hour on the command line, typed as they would type it (subprocesses).

Every path of the commands that deconvolve, with their figures, the ways parameters reach
``calab deconvolve`` (options, a CaTune export, ``calab.tune()``'s dict, the kernel learned
by ``calab cadecon``), the summary ``cadecon --native`` prints, the worked examples of
``--help``, the likely mistakes the commands refuse, and ``doctor`` under ``CALAB_BACKEND``.
Truth: the library functions on the same arrays, and simulated spikes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import calab
from calab.demo import rowwise_correlation

GOLDEN = Path(__file__).parent / "golden_io"
_SCRIPT = Path(sys.executable).parent / "calab"
CALAB = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "calab"]
FS = 30.0
TAUS = (0.1, 0.6)
PNG = b"\x89PNG\r\n\x1a\n"


def calab_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("CALAB_DEBUG", "CALAB_BACKEND")}
    environment.update(env or {})
    return subprocess.run([*CALAB, *args], capture_output=True, text=True, cwd=cwd, env=environment,
                          timeout=600, check=False)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result


def refused(result: subprocess.CompletedProcess, pattern: str, code: int = 1) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert re.search(pattern, result.stderr), result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """Ten simulated GCaMP6f cells (30 s at 30 Hz) saved as rec.npy + sidecar, with their spikes."""
    folder = tmp_path_factory.mktemp("first_use")
    simulation = calab.simulate(calab.presets.gcamp6f(num_cells=10, num_timepoints=1200, seed=5))
    traces = np.asarray(simulation.traces, dtype=np.float64)
    calab.save_for_tuning(traces, FS, folder / "rec")
    spikes = np.stack([np.asarray(cell.spikes, dtype=np.float64) for cell in simulation.ground_truth])
    return folder, traces, spikes


def _spike_score(activity: np.ndarray, spikes: np.ndarray) -> float:
    from calab.demo import binned

    return float(np.nanmedian(rowwise_correlation(binned(activity, 3), binned(spikes, 3))))


# --------------------------------------------------------------------------- --help
@pytest.mark.parametrize("command", ["demo", "deconvolve", "convert", "info", "doctor", "cadecon", "tune"])
def test_every_command_help_shows_a_worked_example(command, tmp_path):
    text = ok(calab_cli(command, "--help", cwd=tmp_path)).stdout
    examples = text.split("examples:", 1)
    assert len(examples) == 2, text
    assert re.search(rf"^\s+calab {command}\b", examples[1], re.MULTILINE), examples[1]


# --------------------------------------------------------------------------- deconvolve
def test_deconvolve_with_the_kernel_typed_on_the_command_line(recording):
    folder, traces, spikes = recording
    result = ok(calab_cli("deconvolve", "rec.npy", "--tau-rise", "0.1", "--tau-decay", "0.6", "--plot", "fit.png",
                          "--backend", "numpy", cwd=folder))
    assert result.stdout.splitlines() == ["Saved activity to activity.npy", "Saved figure to fit.png"]
    activity = np.load(folder / "activity.npy")
    # fs from the sidecar, λ = each cell's noise SD (the default rule): the library's numbers
    expected = calab.run_deconvolution(traces, FS, *TAUS, calab.noise_sd(traces), backend="numpy")
    np.testing.assert_array_equal(activity, expected)
    assert _spike_score(activity, spikes) > 0.7
    assert (folder / "fit.png").read_bytes()[:8] == PNG
    # explicit --lambda and --fs, and --filter as CaTune's noise filter
    ok(calab_cli("deconvolve", "rec.npy", "--fs", "30", "--tau-rise", "0.1", "--tau-decay", "0.6", "--lambda", "0.5",
                 "--filter", "-o", "filtered.npy", "--backend", "numpy", cwd=folder))
    band_passed = calab.bandpass_filter(traces, *TAUS, FS)
    np.testing.assert_array_equal(np.load(folder / "filtered.npy"),
                                  calab.run_deconvolution(band_passed, FS, *TAUS, 0.5, backend="numpy"))


def test_deconvolve_reads_the_dict_tune_returns(recording):
    folder, traces, _ = recording
    params = {"tau_rise": 0.1, "tau_decay": 0.6, "lambda_": 0.8, "fs": 30.0, "filter_enabled": False}
    (folder / "tuned.json").write_text(json.dumps(params))
    ok(calab_cli("deconvolve", "rec.npy", "-p", "tuned.json", "-o", "tuned.npy", "--backend", "numpy", cwd=folder))
    np.testing.assert_array_equal(np.load(folder / "tuned.npy"),
                                  calab.run_deconvolution(traces, FS, *TAUS, 0.8, backend="numpy"))
    # typed options override the file's
    ok(calab_cli("deconvolve", "rec.npy", "-p", "tuned.json", "--lambda", "2", "-o", "tuned2.npy",
                 "--backend", "numpy", cwd=folder))
    np.testing.assert_array_equal(np.load(folder / "tuned2.npy"),
                                  calab.run_deconvolution(traces, FS, *TAUS, 2.0, backend="numpy"))


def test_deconvolve_still_reads_a_catune_export(tmp_path):
    shutil.copy(GOLDEN / "in_decon.npy", tmp_path / "in.npy")
    ok(calab_cli("deconvolve", "in.npy", "-p", str(GOLDEN / "export_v1_2.json"), "--plot", "f.png",
                 "--backend", "numpy", cwd=tmp_path))
    expected = calab.deconvolve_from_export(np.load(tmp_path / "in.npy"), GOLDEN / "export_v1_2.json", backend="numpy")
    np.testing.assert_array_equal(np.load(tmp_path / "activity.npy"), expected)
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG


def test_deconvolve_streamed_to_zarr_with_a_figure(recording, tmp_path):
    pytest.importorskip("zarr")
    folder, traces, _ = recording
    ok(calab_cli("deconvolve", str(folder / "rec.npy"), "--tau-rise", "0.1", "--tau-decay", "0.6", "--lambda", "0.5",
                 "--out", "out.zarr", "--plot", "streamed.png", "--backend", "numpy", cwd=tmp_path))
    assert (tmp_path / "streamed.png").read_bytes()[:8] == PNG
    refused(calab_cli("deconvolve", str(folder / "rec.npy"), "--tau-rise", "0.1", "--tau-decay", "0.6",
                      "--out", "x.zarr", cwd=tmp_path), "with --out, give --lambda")


def test_likely_mistakes_are_refused_with_the_fix(recording, tmp_path):
    folder, traces, _ = recording
    refused(calab_cli("deconvolve", "rec.npy", "--tau-rise", "100", "--tau-decay", "600", cwd=folder),
            r"look like milliseconds.*Did you mean --tau-rise=0\.1, --tau-decay=0\.6\?")
    refused(calab_cli("deconvolve", "rec.npy", cwd=folder), r"give the kernel: --tau-rise S --tau-decay S")
    refused(calab_cli("deconvolve", "rec.npy", "--tau-rise", "0.1", cwd=folder), "give both --tau-rise and --tau-decay")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    refused(calab_cli("deconvolve", str(folder / "rec.npy"), "-p", "other.json", cwd=tmp_path),
            r"holds no deconvolution parameters.*CaTune export.*calab\.tune\(\).*calab cadecon -o STEM")
    np.save(tmp_path / "plain.npy", traces)
    refused(calab_cli("deconvolve", "plain.npy", "--tau-rise", "0.1", "--tau-decay", "0.6", cwd=tmp_path),
            r"--fs \(sampling rate in Hz\) is required")
    # frames as rows: the run goes on (a short recording of many cells is legal) with a warning and the fix
    np.save(tmp_path / "transposed.npy", traces.T)
    result = ok(calab_cli("deconvolve", "transposed.npy", "--fs", "30", "--tau-rise", "0.1", "--tau-decay", "0.6",
                          cwd=tmp_path))
    assert re.search(r"Warning: transposed\.npy has shape \(1200, 10\).*numpy\.load\('transposed\.npy'\)\.T",
                     result.stderr), result.stderr
    assert result.stderr.count("Warning:") == 1


# --------------------------------------------------------------------------- cadecon
def test_cadecon_native_summary_then_save_then_reuse(recording):
    folder, traces, spikes = recording
    run = ok(calab_cli("cadecon", "rec.npy", "--native", "--backend", "numpy", cwd=folder))
    out = run.stdout
    kernel = re.search(r"^Kernel: tau_rise ([\d.]+) s, tau_decay ([\d.]+) s, peak (\d+) ms after a spike$", out,
                       re.MULTILINE)
    assert kernel and 0.3 < float(kernel.group(2)) < 1.2, out
    assert "fitted to the traces' bispectrum" in out
    assert "Cells: 10 x 1200 frames at 30 Hz, on numpy" in out
    assert re.search(r"^Spikes per cell: not counted \(counts=True, or --counts, ", out, re.MULTILINE)
    assert re.search(r"^Warnings: none$|^Warnings \(\d+\):$", out, re.MULTILINE)
    assert "array(" not in out  # no raw reprs
    save = re.search(r"^Nothing was saved\. To save the activity and the kernel: (calab .*)$", out, re.MULTILINE)
    assert save and save.group(1).endswith("-o rec_cadecon"), out
    assert not list(folder.glob("rec_cadecon*"))
    # the printed line, as typed, plus a figure
    words = save.group(1).split()[1:]
    saved = ok(calab_cli(*words, "--plot", "cadecon.png", cwd=folder))
    assert "Saved to rec_cadecon_activity.npy and rec_cadecon_results.json" in saved.stdout
    assert (folder / "cadecon.png").read_bytes()[:8] == PNG
    learned = np.load(folder / "rec_cadecon_activity.npy")
    assert _spike_score(learned, spikes) > 0.6
    # the learned kernel reused by deconvolve gives the same continuous activity
    ok(calab_cli("deconvolve", "rec.npy", "-p", "rec_cadecon_results.json", "-o", "reused.npy", "--backend", "numpy",
                 cwd=folder))
    np.testing.assert_array_equal(np.load(folder / "reused.npy").astype(np.float32), learned)
    # whole events on request
    counted = ok(calab_cli("cadecon", "rec.npy", "--native", "--backend", "numpy", "--counts", cwd=folder)).stdout
    assert re.search(r"^Spikes per cell \(thresholded events\): median \d+, range \d+-\d+$", counted, re.MULTILINE)
    assert "--counts -o rec_cadecon" in counted


# --------------------------------------------------------------------------- demo and doctor
def test_demo_draws_its_figure(tmp_path):
    result = ok(calab_cli("demo", "--cells", "4", "--frames", "900", "--cadecon-cells", "0", "--backend", "numpy",
                          "--plot", "demo.png", cwd=tmp_path))
    assert "Saved figure to demo.png" in result.stdout
    assert (tmp_path / "demo.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize("backend, words", [("numpy", "NumPy"), ("jax", "JAX")])
def test_doctor_agrees_with_calab_backend(backend, words, tmp_path):
    from calab.backends import backend_info

    if not backend_info(backend).usable:
        pytest.skip(f"{backend} is not usable here")
    out = ok(calab_cli("doctor", cwd=tmp_path, env={"CALAB_BACKEND": backend})).stdout
    assert f"Default backend: {backend} (CALAB_BACKEND={backend})" in out
    if not backend_info(backend).has_gpu:
        assert re.search(rf"calab computes on the CPU \({words}\)", out), out
        other = {"NumPy", "JAX"} - {words}
        assert not any(f"CPU ({name})" in out for name in other), out


# --------------------------------------------------------------------------- tune
def test_tune_on_the_command_line_saves_what_the_page_exports(recording):
    from _bridge_client import BridgeClient, catune_export

    folder, traces, _ = recording
    environment = {k: v for k, v in os.environ.items() if k not in ("CALAB_DEBUG", "CALAB_BACKEND")}
    environment["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen([*CALAB, "tune", "rec.npy", "--no-browser", "-o", "params.json"], cwd=folder,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Waiting for Export to Python"):
                break
        assert "Open that URL in a web browser on this machine.\n" in lines, lines
        url = next(line for line in lines if line.startswith("CaTune page: ")).split(": ", 1)[1].strip()
        page = BridgeClient(url)
        status, opening = page.json("/calab/v1/catune/opening")  # what the page opens at
        assert status == 200 and opening["tau_decay"] == pytest.approx(0.6, rel=0.25), opening
        status, _ = page.json("/api/v1/params", catune_export(opening["tau_rise"], opening["tau_decay"],
                                                               lam=opening["lambda"], filter_enabled=True))
        assert status == 200
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err
    saved = json.loads((folder / "params.json").read_text())
    assert saved == {"tau_rise": opening["tau_rise"], "tau_decay": opening["tau_decay"], "lambda_": opening["lambda"],
                     "fs": 30.0, "filter_enabled": True}
    assert "calab deconvolve rec.npy -p params.json" in out
    ok(calab_cli("deconvolve", "rec.npy", "-p", "params.json", "-o", "from_tune.npy", "--backend", "numpy", cwd=folder))
    band_passed = calab.bandpass_filter(traces, opening["tau_rise"], opening["tau_decay"], FS)
    np.testing.assert_array_equal(np.load(folder / "from_tune.npy"), calab.run_deconvolution(
        band_passed, FS, opening["tau_rise"], opening["tau_decay"], opening["lambda"], backend="numpy"))
