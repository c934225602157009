"""The ``calab`` command, exercised through its real entry point (a subprocess).

Expected outputs come from the published ``calab==0.3.0`` where it has the command
(``tests/golden_io/ref_cli_*.txt``, its ``convert`` outputs) and from the simulation's
ground truth for ``calab demo``.
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
from calab import cli
from conftest import assert_activity_matches

GOLDEN = Path(__file__).parent / "golden_io"
_SCRIPT = Path(sys.executable).parent / "calab"
CALAB = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "calab"]


def run(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "CALAB_DEBUG"}
    environment.update(env or {})
    return subprocess.run([*CALAB, *args], capture_output=True, text=True, cwd=cwd, env=environment,
                          timeout=120, check=False)


def assert_error(result: subprocess.CompletedProcess, pattern: str, code: int = 1) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert re.search(pattern, result.stderr), result.stderr
    assert "Traceback" not in result.stderr


def two_event_trace(path: Path) -> Path:
    """The reference test's input: a 1 x 200 trace with two calcium events."""
    t = np.arange(200) / 30.0
    kernel = np.exp(-t / 0.5) - np.exp(-t / 0.05)
    spikes = np.zeros(200)
    spikes[[40, 120]] = 1.0
    np.save(path, np.convolve(spikes, kernel)[:200])
    return path


# --------------------------------------------------------------------------- basics
def test_version_and_usage_errors():
    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"calab {calab.__version__}"
    assert_error(run(), "the following arguments are required: command", code=2)
    assert_error(run("frobnicate"), "invalid choice", code=2)


def test_python_dash_m_calab_works():
    result = subprocess.run([sys.executable, "-m", "calab", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("calab ")


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0
    for command in ("demo", "deconvolve", "convert", "info", "doctor", "cadecon"):
        assert command in result.stdout
    # The browser commands (tune, cadecon) are listed once calab has the bridge; see
    # test_bridge_protocol.py::test_cli_tune_is_listed.


# --------------------------------------------------------------------------- deconvolve
def test_deconvolve_two_event_trace(tmp_path):
    two_event_trace(tmp_path / "trace.npy")
    shutil.copy(GOLDEN / "export_v1_1.json", tmp_path / "params.json")
    result = run("deconvolve", "trace.npy", "-p", "params.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Saved activity to activity.npy"
    activity = np.load(tmp_path / "activity.npy")
    assert activity.shape == (1, 200) and activity.dtype == np.float64 and (activity >= 0).all()
    assert set(np.argsort(activity[0])[-2:]) <= set(range(38, 46)) | set(range(118, 126))


def test_deconvolve_matches_reference_and_full_info(tmp_path):
    result = run("deconvolve", str(GOLDEN / "in_decon.npy"), "-p", str(GOLDEN / "export_v1_2.json"),
                 "-o", str(tmp_path / "out"), "--full", "--backend", "numpy")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"Saved activity to {tmp_path / 'out.npy'}",
                                          f"Saved info to {tmp_path / 'out_info.json'}"]
    ours = np.load(tmp_path / "out.npy")
    reference = np.load(GOLDEN / "ref_decon_filter_on.npy")
    assert ours.shape == reference.shape == (2, 300)
    assert_activity_matches(ours, reference)
    info = json.loads((tmp_path / "out_info.json").read_text())
    assert list(info) == ["baseline", "iterations", "converged"]
    assert len(info["baseline"]) == 2 and all(isinstance(i, int) for i in info["iterations"])


def test_deconvolve_refuses_to_overwrite_without_force(tmp_path):
    two_event_trace(tmp_path / "trace.npy")
    params = str(GOLDEN / "export_v1_1.json")
    assert run("deconvolve", "trace.npy", "-p", params, cwd=tmp_path).returncode == 0
    first = (tmp_path / "activity.npy").read_bytes()
    assert_error(run("deconvolve", "trace.npy", "-p", params, cwd=tmp_path), "already exists. Pass --force")
    assert (tmp_path / "activity.npy").read_bytes() == first
    assert run("deconvolve", "trace.npy", "-p", params, "--force", cwd=tmp_path).returncode == 0
    assert_error(run("deconvolve", "trace.npy", "-p", params, "-o", "trace.npy", "--force", cwd=tmp_path),
                 "is the input file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["activity.npy", "trace.npy"]  # no temporaries


def test_deconvolve_errors_are_one_line(tmp_path):
    two_event_trace(tmp_path / "trace.npy")
    np.save(tmp_path / "cube.npy", np.ones((2, 2, 50)))
    (tmp_path / "bad.json").write_text('{"parameters": {"tau_rise_s": 0.1}}')
    (tmp_path / "trunc.npy").write_bytes((tmp_path / "trace.npy").read_bytes()[:300])
    params = str(GOLDEN / "export_v1_1.json")
    assert_error(run("deconvolve", "trace.npy", cwd=tmp_path), r"give the kernel: --tau-rise S --tau-decay S")
    assert_error(run("deconvolve", "missing.npy", "-p", params, cwd=tmp_path), "Error: Trace file not found")
    assert_error(run("deconvolve", "trace.npy", "-p", "missing.json", cwd=tmp_path), "Parameters file not found")
    assert_error(run("deconvolve", "trace.npy", "-p", "bad.json", cwd=tmp_path), r"lacks parameter\(s\)")
    assert_error(run("deconvolve", "cube.npy", "-p", params, cwd=tmp_path), "must be 1D or 2D, got 3D")
    assert_error(run("deconvolve", "trunc.npy", "-p", params, cwd=tmp_path), "truncated")
    assert_error(run("deconvolve", "trace.npy", "-p", params, "-o", "no/such/dir/a.npy", cwd=tmp_path),
                 "Output directory does not exist")
    assert_error(run("deconvolve", "trace.npy", "-p", params, "--backend", "tpu", cwd=tmp_path),
                 "invalid choice", code=2)


def test_deconvolve_unusable_backend_says_why(tmp_path):
    from calab.backends import backend_info

    if backend_info("cupy").usable:
        pytest.skip("CuPy is usable here")
    two_event_trace(tmp_path / "trace.npy")
    result = run("deconvolve", "trace.npy", "-p", str(GOLDEN / "export_v1_1.json"), "--backend", "cupy",
                 cwd=tmp_path)
    assert_error(result, "Error: backend 'cupy' is not usable")
    assert not (tmp_path / "activity.npy").exists()


def test_deconvolve_reads_calab_stems_and_warns_on_rate_mismatch(tmp_path):
    calab.save_for_tuning(np.load(GOLDEN / "in_decon.npy"), 20.0, tmp_path / "rec")
    result = run("deconvolve", "rec", "-p", str(GOLDEN / "export_v1_1.json"), cwd=tmp_path)
    assert result.returncode == 0
    assert "tuned at 30.0 Hz" in result.stderr and "20.0 Hz" in result.stderr
    assert np.load(tmp_path / "activity.npy").shape == (2, 300)


# --------------------------------------------------------------------------- convert
def _caiman(path: Path, traces: np.ndarray, fr: float | None = 30.0) -> Path:
    import h5py

    with h5py.File(path, "w") as handle:
        handle.create_dataset("estimates/C", data=traces, chunks=(1, 10), compression="gzip")
        if fr is not None:
            handle.create_dataset("params/data/fr", data=np.float64(fr))
    return path


@pytest.mark.parametrize("fmt", ["caiman", "minian"])
def test_convert_output_is_identical_to_the_reference(tmp_path, fmt):
    pytest.importorskip("h5py")
    zarr = pytest.importorskip("zarr")
    traces = np.load(GOLDEN / "in_convert.npy")
    if fmt == "caiman":
        source, extra = _caiman(tmp_path / "cai_session.hdf5", traces), []
    else:
        source, extra = tmp_path / "min_session", ["--fs", "12.5"]
        zarr.open_group(str(source), mode="w").create_array("C", shape=traces.shape, dtype=traces.dtype,
                                                            chunks=(2, 16))[:] = traces
    result = run("convert", source.name, "-f", fmt, *extra, "-o", f"ref_convert_{fmt}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (GOLDEN / f"ref_cli_convert_{fmt}.txt").read_text()
    for suffix in (".npy", "_metadata.json"):
        assert (tmp_path / f"ref_convert_{fmt}{suffix}").read_bytes() == \
            (GOLDEN / f"ref_convert_{fmt}{suffix}").read_bytes()


def test_convert_defaults_detection_and_errors(tmp_path):
    pytest.importorskip("h5py")
    traces = np.load(GOLDEN / "in_convert.npy")
    (tmp_path / "data").mkdir()
    _caiman(tmp_path / "data" / "session1.hdf5", traces)
    _caiman(tmp_path / "data" / "norate.hdf5", traces, fr=None)
    result = run("convert", "data/session1.hdf5", cwd=tmp_path)  # format detected, stem in cwd
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Saved 3 traces (30 timepoints) to session1.npy"
    meta = json.loads((tmp_path / "session1_metadata.json").read_text())
    assert meta["source_format"] == "caiman" and meta["sampling_rate_hz"] == 30.0
    assert_error(run("convert", "data/session1.hdf5", cwd=tmp_path), "already exists")
    assert_error(run("convert", "data/norate.hdf5", "-f", "caiman", cwd=tmp_path),
                 r"^Error: --fs is required \(not found in source file\)$")
    assert not (tmp_path / "norate.npy").exists()
    result = run("convert", "data/norate.hdf5", "--fs", "7.5", "-o", "out/x", cwd=tmp_path)
    assert_error(result, "Output directory does not exist")
    assert_error(run("convert", "data/missing.hdf5", "-f", "caiman", cwd=tmp_path),
                 "Error: CaImAn HDF5 file not found")
    assert_error(run("convert", "data/session1.hdf5", "--key", "estimates/X", "-o", "k", cwd=tmp_path),
                 r"Trace key 'estimates/X' not found .*Available keys: \['estimates', 'params'\]")
    assert_error(run("convert", "data/session1.hdf5", "-f", "excel", cwd=tmp_path), "invalid choice", code=2)
    assert_error(run("convert", "data/session1.hdf5", "--fs", "-3", cwd=tmp_path), "positive", code=2)
    (tmp_path / "notes.txt").write_text("x")
    assert_error(run("convert", "notes.txt", cwd=tmp_path), "Choose the format explicitly")


def test_convert_suite2p_and_nwb(tmp_path):
    h5py = pytest.importorskip("h5py")
    plane = tmp_path / "suite2p" / "plane0"
    plane.mkdir(parents=True)
    f = np.arange(40, dtype=np.float32).reshape(4, 10)
    np.save(plane / "F.npy", f)
    np.save(plane / "Fneu.npy", np.ones_like(f))
    np.save(plane / "iscell.npy", np.array([[1, 0.9], [0, 0.1], [1, 0.8], [1, 0.7]]))
    np.save(plane / "ops.npy", {"fs": 9.0, "neucoeff": 0.5})
    result = run("convert", "suite2p", "-o", "s2p", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    traces, meta = calab.load_tuning_data(tmp_path / "s2p")
    np.testing.assert_array_equal(traces, f[[0, 2, 3]] - 0.5)
    assert meta["source_format"] == "suite2p" and meta["sampling_rate_hz"] == 9.0
    assert meta["roi_indices"] == [0, 2, 3]
    assert run("convert", "suite2p", "-o", "raw", "--no-neuropil", "--all-rois", cwd=tmp_path).returncode == 0
    np.testing.assert_array_equal(calab.load_tuning_data(tmp_path / "raw")[0], f)

    with h5py.File(tmp_path / "rec.nwb", "w") as handle:
        handle.attrs["nwb_version"] = "2.7.0"
        group = handle.create_group("processing/ophys/Fluorescence/RoiResponseSeries")
        group.attrs["neurodata_type"] = "RoiResponseSeries"
        group.create_dataset("data", data=f.T)
        group.create_dataset("starting_time", data=0.0).attrs["rate"] = 15.0
    result = run("convert", "rec.nwb", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    traces, meta = calab.load_tuning_data(tmp_path / "rec")
    np.testing.assert_array_equal(traces, f)
    assert meta["sampling_rate_hz"] == 15.0 and meta["source"] == "nwb"
    assert_error(run("convert", "rec.nwb", "--no-neuropil", "-o", "y", cwd=tmp_path), "suite2p input only")


# --------------------------------------------------------------------------- info
@pytest.mark.parametrize(
    "name, target",
    [("info_npy", "ref_basic.npy"), ("info_export", "export_v1_2.json"),
     ("info_sidecar", "ref_basic_metadata.json"), ("info_1d", "in_single_f32.npy")],
)
def test_info_matches_reference_output(name, target):
    result = run("info", target, cwd=GOLDEN)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (GOLDEN / f"ref_cli_{name}.txt").read_text()


def test_info_errors_and_pipeline_outputs(tmp_path):
    (tmp_path / "x.csv").write_text("1,2")
    result = run("info", "x.csv", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.strip() == "Unknown file type: .csv"
    assert_error(run("info", "missing.npy", cwd=tmp_path), "Error: File not found: missing.npy")
    (tmp_path / "bad.npy").write_bytes(b"hello")
    assert_error(run("info", "bad.npy", cwd=tmp_path), "not a valid .npy file")
    (tmp_path / "list.json").write_text("[1]")
    assert_error(run("info", "list.json", cwd=tmp_path), "JSON object")
    pytest.importorskip("h5py")
    _caiman(tmp_path / "c.hdf5", np.ones((2, 60), np.float32))
    result = run("info", "c.hdf5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "  Format: caiman" in result.stdout and "  Sampling rate: 30.0 Hz" in result.stdout
    assert "  Duration: 2.0 s" in result.stdout


# --------------------------------------------------------------------------- doctor / demo
def test_doctor_reports_backends():
    result = run("doctor")
    assert result.returncode == 0, result.stderr
    assert re.search(r"numpy\s+usable", result.stdout)
    for name in ("jax", "cupy"):
        assert re.search(rf"^  {name}\s+(usable|unavailable)", result.stdout, re.MULTILINE)
    assert "Default backend:" in result.stdout
    report = json.loads(run("doctor", "--json").stdout)
    assert report["backends"]["numpy"]["usable"] is True
    assert report["calab"] == calab.__version__
    assert set(report["backends"]) == {"numpy", "jax", "cupy"}
    assert report["optional"]["h5py"]["version"]


@pytest.mark.slow
def test_demo_reports_accuracy_against_ground_truth():
    result = run("demo", "--cells", "6", "--frames", "1800", "--seed", "3", "--backend", "numpy")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # piped: no progress bar
    inferred = float(re.search(r"inferred activity with true spikes: ([-\d.]+)", result.stdout).group(1))
    raw = float(re.search(r"raw fluorescence with true spikes:\s+([-\d.]+)", result.stdout).group(1))
    assert inferred > 0.6 and inferred > raw + 0.2
    assert re.search(r"done in [\d.]+ s: [\d,]+ samples/s", result.stdout)
    assert "backend 'numpy'" in result.stdout
    # the automated path: a learned kernel next to the true one, with both accuracies
    learned = re.search(r"learned: tau_rise ([\d.]+) s, tau_decay ([\d.]+) s", result.stdout)
    assert learned and 0.3 < float(learned.group(2)) < 1.2
    assert re.search(r"at the learned kernel\): [\d.]+\s+vs FISTA with the true kernel: [\d.]+", result.stdout)


def test_demo_rejects_nonsense_sizes():
    assert_error(run("demo", "--cells", "0"), "--cells must be >= 1")
    assert_error(run("demo", "--frames", "abc"), "invalid int value", code=2)


# --------------------------------------------------------------------------- in-process pieces
def test_progress_indicator_on_a_terminal_only(monkeypatch, capsys):
    rng = np.random.default_rng(0)
    traces = np.abs(rng.standard_normal((7, 400))).cumsum(axis=1) % 5
    expected = calab.run_deconvolution_full(traces, 30.0, 0.05, 0.5, 0.1, backend="numpy")
    monkeypatch.setattr(cli, "_PROGRESS_MIN_SAMPLES", 10)
    monkeypatch.setattr(cli, "_stderr_is_tty", lambda: False)
    cli._solve(traces, 30.0, 0.05, 0.5, 0.1, full=True, backend="numpy")
    assert capsys.readouterr().err == ""  # piped: silent
    monkeypatch.setattr(cli, "_stderr_is_tty", lambda: True)
    result = cli._solve(traces, 30.0, 0.05, 0.5, 0.1, full=True, backend="numpy")
    assert "deconvolving 7 cells x 400 frames" in capsys.readouterr().err
    for ours, reference in zip(result, expected, strict=True):  # the display never changes the numbers
        np.testing.assert_array_equal(ours, reference)


def test_tune_and_cadecon_commands_with_a_bridge(tmp_path, monkeypatch, capsys):
    calab.save_for_tuning(np.ones((2, 50)), 25.0, tmp_path / "rec")
    calls = {}

    def fake_tune(traces, fs, port=None, open_browser=True):
        calls["tune"] = (traces.shape, fs, port, open_browser)
        return {"tau_rise": 0.1, "tau_decay": 0.6, "lambda_": 0.5, "fs": fs, "filter_enabled": False}

    class Result:
        activity = np.zeros((2, 50), np.float64)
        alphas, baselines, pves = np.ones(2), np.zeros(2), np.full(2, 0.5)
        kernel_slow, kernel_fast, fs = np.ones(30, np.float32), np.array([], np.float32), 30.0
        metadata = {"h_free": np.arange(3)}

    monkeypatch.setattr(calab, "tune", fake_tune, raising=False)
    monkeypatch.setattr(calab, "decon", lambda traces, fs, port=None, open_browser=True: Result(), raising=False)
    assert cli.main(["tune", str(tmp_path / "rec"), "--no-browser", "--port", "8765"]) == 0
    assert calls["tune"] == ((2, 50), 25.0, 8765, False)  # fs from the sidecar
    assert json.loads(capsys.readouterr().out)["lambda_"] == 0.5
    np.save(tmp_path / "plain.npy", np.ones(50))
    assert cli.main(["tune", str(tmp_path / "plain.npy")]) == 1
    assert capsys.readouterr().err.strip() == "Error: --fs (sampling rate) is required"
    assert cli.main(["cadecon", str(tmp_path / "plain.npy"), "-o", str(tmp_path / "cd")]) == 0
    out = capsys.readouterr().out
    assert "Cells: 2 x 50 frames at 30 Hz" in out and "Kernel: none could be learned" in out
    assert np.load(tmp_path / "cd_activity.npy").dtype == np.float32
    summary = json.loads((tmp_path / "cd_results.json").read_text())
    assert summary["metadata"] == {"h_free": [0, 1, 2]} and summary["kernel_fast_length"] == 0
    monkeypatch.setattr(calab, "tune", lambda *a, **k: None)
    assert cli.main(["tune", str(tmp_path / "rec")]) == 1
    assert capsys.readouterr().err.strip() == "No parameters received."


def test_bridge_commands_without_a_bridge_explain(tmp_path, monkeypatch, capsys):
    np.save(tmp_path / "t.npy", np.ones((1, 20)))
    monkeypatch.delattr(calab, "tune", raising=False)
    monkeypatch.setattr(calab, "__getattr__", lambda name: (_ for _ in ()).throw(AttributeError(name)))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["tune", str(tmp_path / "t.npy"), "--fs", "30"])
    assert exit_info.value.code == 2 and "invalid choice: 'tune'" in capsys.readouterr().err
