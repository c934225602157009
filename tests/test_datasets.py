"""Whole datasets: streamed deconvolution to Zarr, resume after kill -9, Dask.

Truth is the in-memory engine: ``run_deconvolution_full`` on the whole recording, as the
loaders return it.  The NumPy backend gives every cell the same arithmetic whatever the
batching, so streamed, resumed and cluster results must equal it bit for bit.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import calab
from calab.datasets import DatasetLockedError, DatasetMismatchError, deconvolve_dataset, open_source

zarr = pytest.importorskip("zarr")
h5py = pytest.importorskip("h5py")

FS, TAU_R, TAU_D, LAM, ITERS = 30.0, 0.1, 0.6, 0.5, 200
SOLVE = dict(fs=FS, tau_r=TAU_R, tau_d=TAU_D, lam=LAM, max_iters=ITERS, backend="numpy")
REPO = Path(__file__).resolve().parents[1]


def make_traces(cells: int, frames: int, seed: int = 0) -> np.ndarray:
    """Calcium-like traces: Poisson spikes through a double exponential, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(5 * TAU_D * FS)) / FS
    kernel = np.exp(-t / TAU_D) - np.exp(-t / TAU_R)
    spikes = rng.poisson(0.05, size=(cells, frames)).astype(np.float64)
    calcium = np.stack([np.convolve(row, kernel)[:frames] for row in spikes])
    return 100.0 + 20.0 * calcium + rng.normal(0.0, 1.0, size=(cells, frames))


def in_memory(traces: np.ndarray, lam=LAM):
    return calab.run_deconvolution_full(
        np.asarray(traces, dtype=np.float64), FS, TAU_R, TAU_D, lam, max_iters=ITERS, backend="numpy"
    )


def read_output(path: Path) -> dict:
    group = zarr.open_group(str(path), mode="r")
    return {name: group[name][...] for name in ("activity", "baseline", "iterations", "converged")}


def assert_equals_in_memory(path: Path, expected) -> None:
    got = read_output(path)
    assert got["activity"].dtype == np.float32
    np.testing.assert_array_equal(got["activity"].astype(np.float64), expected.activity)
    np.testing.assert_array_equal(got["baseline"], expected.baseline)
    np.testing.assert_array_equal(got["iterations"], expected.iterations)
    np.testing.assert_array_equal(got["converged"], expected.converged)


@pytest.fixture(scope="module")
def traces() -> np.ndarray:
    return make_traces(50, 400).astype(np.float32)


@pytest.fixture(scope="module")
def expected(traces):
    return in_memory(traces)


# --------------------------------------------------------------------------- sources
def test_zarr_source_streams_to_the_in_memory_result(tmp_path, traces, expected):
    source = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=traces.shape, chunks=(16, 400), dtype="f4")
    source[:] = traces
    run = deconvolve_dataset(tmp_path / "in.zarr", tmp_path / "out.zarr", chunk_cells=12, **SOLVE)
    assert (run.n_cells, run.n_timepoints, run.chunk_cells, run.chunks_total) == (50, 400, 12, 5)
    assert (run.chunks_solved, run.chunks_resumed) == (5, 0)
    assert_equals_in_memory(tmp_path / "out.zarr", expected)
    manifest = json.loads((tmp_path / "out.zarr" / "calab_manifest.json").read_text())
    assert sorted(manifest["done"]) == [0, 1, 2, 3, 4]
    assert not (tmp_path / "out.zarr" / "reconvolution").exists()


def test_minian_time_major_zarr_is_transposed(tmp_path, traces, expected):
    group = zarr.open_group(str(tmp_path / "minian"), mode="w")
    array = group.create_array("C", shape=traces.T.shape, chunks=(100, 50), dtype="f4",
                               dimension_names=("frame", "unit_id"))
    array[:] = traces.T
    deconvolve_dataset(tmp_path / "minian", tmp_path / "out.zarr", chunk_cells=20, **SOLVE)
    assert_equals_in_memory(tmp_path / "out.zarr", expected)


def test_caiman_hdf5_source_and_its_sampling_rate(tmp_path, traces):
    path = tmp_path / "caiman.hdf5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("estimates/C", data=traces.astype(np.float64), chunks=(8, 400))
        handle.create_dataset("params/data/fr", data=FS)
    options = {**SOLVE, "fs": None}
    deconvolve_dataset(path, tmp_path / "out.zarr", chunk_cells=16, save_reconvolution=True, **options)
    loaded, meta = calab.load_caiman(path)
    assert meta["sampling_rate_hz"] == FS
    reference = in_memory(loaded)
    assert_equals_in_memory(tmp_path / "out.zarr", reference)
    reconvolution = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["reconvolution"][...]
    np.testing.assert_array_equal(reconvolution, reference.reconvolution.astype(np.float32))


def test_memory_mapped_npy_source(tmp_path, traces, expected):
    np.save(tmp_path / "traces.npy", traces)
    source = open_source(tmp_path / "traces.npy")
    assert source.kind == "npy" and source.shape == traces.shape and source.dtype == np.float32
    assert isinstance(source._array, np.memmap)
    deconvolve_dataset(tmp_path / "traces.npy", tmp_path / "out.zarr", chunk_cells=7, **SOLVE)
    assert_equals_in_memory(tmp_path / "out.zarr", expected)


def test_suite2p_folder_matches_load_suite2p(tmp_path, traces):
    plane = tmp_path / "suite2p" / "plane0"
    plane.mkdir(parents=True)
    rng = np.random.default_rng(3)
    np.save(plane / "F.npy", traces)
    np.save(plane / "Fneu.npy", (rng.random(traces.shape) * 10).astype(np.float32))
    iscell = np.column_stack([rng.random(50) > 0.3, rng.random(50)]).astype(np.float64)
    np.save(plane / "iscell.npy", iscell)
    np.save(plane / "ops.npy", {"fs": FS, "neucoeff": 0.6}, allow_pickle=True)
    run = deconvolve_dataset(tmp_path / "suite2p", tmp_path / "out.zarr", chunk_cells=9, **{**SOLVE, "fs": None})
    loaded, meta = calab.load_suite2p(tmp_path / "suite2p")
    assert run.n_cells == len(meta["roi_indices"]) == int(iscell[:, 0].sum())
    assert_equals_in_memory(tmp_path / "out.zarr", in_memory(loaded))


def test_nwb_series_is_read_by_roi_columns(tmp_path, traces):
    path = tmp_path / "session.nwb"
    with h5py.File(path, "w") as handle:
        handle.attrs["nwb_version"] = "2.7.0"
        group = handle.create_group("processing/ophys/Fluorescence/RoiResponseSeries")
        group.attrs["neurodata_type"] = "RoiResponseSeries"
        data = group.create_dataset("data", data=traces.T, chunks=(100, 50))
        data.attrs["conversion"] = 2.0
        data.attrs["offset"] = 0.0
        group.create_dataset("starting_time", data=0.0).attrs["rate"] = FS
    run = deconvolve_dataset(path, tmp_path / "out.zarr", chunk_cells=13, **{**SOLVE, "fs": None})
    assert run.n_cells == 50
    loaded, _ = calab.load_nwb(path)
    assert_equals_in_memory(tmp_path / "out.zarr", in_memory(loaded))


def test_per_cell_lambda_and_array_source(tmp_path, traces):
    lam = np.linspace(0.2, 1.0, traces.shape[0])
    deconvolve_dataset(traces, tmp_path / "out.zarr", chunk_cells=11, **{**SOLVE, "lam": lam})
    assert_equals_in_memory(tmp_path / "out.zarr", in_memory(traces, lam=lam))
    with pytest.raises(DatasetMismatchError, match="lam"):
        deconvolve_dataset(traces, tmp_path / "out.zarr", **{**SOLVE, "lam": lam[::-1].copy()})


def test_open_array_objects_are_sources(tmp_path, traces, expected):
    """h5py datasets, zarr arrays and dask arrays already opened by the caller."""
    da = pytest.importorskip("dask.array")
    with h5py.File(tmp_path / "x.h5", "w") as handle:
        handle["traces"] = traces
        deconvolve_dataset(handle["traces"], tmp_path / "h5.zarr", chunk_cells=20, **SOLVE)
    assert_equals_in_memory(tmp_path / "h5.zarr", expected)
    deconvolve_dataset(da.from_array(traces, chunks=(7, 400)), tmp_path / "dask.zarr", chunk_cells=20, **SOLVE)
    assert_equals_in_memory(tmp_path / "dask.zarr", expected)
    with pytest.raises(ValueError, match="does not store its sampling rate"):
        deconvolve_dataset(traces, tmp_path / "nofs.zarr", **{**SOLVE, "fs": None})
    with pytest.raises(TypeError, match="complex"):
        deconvolve_dataset(traces.astype(np.complex64), tmp_path / "c.zarr", **SOLVE)


def test_chunk_size_follows_free_memory_and_budget():
    from calab.backends import get_backend
    from calab.datasets import plan_chunk_cells

    backend = get_backend("numpy")
    small = plan_chunk_cells(backend, 100_000, 3000, 4, memory_budget=64 << 20)
    large = plan_chunk_cells(backend, 100_000, 3000, 4, memory_budget=256 << 20)
    assert 1 <= small < large <= backend.max_chunk_cells(100_000, 3000)
    assert plan_chunk_cells(backend, 10, 3000, 4, memory_budget=1 << 40) == 10
    default = plan_chunk_cells(backend, 10**6, 3000, 4)
    assert default * 3000 * 4 <= 256 << 20  # a chunk's input never exceeds the host budget


# --------------------------------------------------------------------------- resume
def test_resume_skips_finished_chunks_and_refuses_other_parameters(tmp_path, traces, expected):
    np.save(tmp_path / "in.npy", traces)
    out = tmp_path / "out.zarr"
    deconvolve_dataset(tmp_path / "in.npy", out, chunk_cells=10, **SOLVE)
    again = deconvolve_dataset(tmp_path / "in.npy", out, **SOLVE)
    assert (again.chunks_solved, again.chunks_resumed, again.chunk_cells) == (0, 5, 10)
    with pytest.raises(DatasetMismatchError, match=r"tau_d: the output has 0\.6, this run asks for 0\.7"):
        deconvolve_dataset(tmp_path / "in.npy", out, **{**SOLVE, "tau_d": 0.7})
    with pytest.raises(DatasetMismatchError, match="max_iters"):
        deconvolve_dataset(tmp_path / "in.npy", out, **{**SOLVE, "max_iters": 300})
    with pytest.raises(DatasetMismatchError, match="chunk_cells"):
        deconvolve_dataset(tmp_path / "in.npy", out, chunk_cells=20, **SOLVE)
    np.save(tmp_path / "other.npy", traces[::-1].copy())  # same shape, another recording
    with pytest.raises(DatasetMismatchError, match="fingerprint"):
        deconvolve_dataset(tmp_path / "other.npy", out, **SOLVE)
    with pytest.raises(FileExistsError, match="resume=True"):
        deconvolve_dataset(tmp_path / "in.npy", out, resume=False, **SOLVE)
    assert_equals_in_memory(out, expected)  # refusals touched nothing
    rerun = deconvolve_dataset(tmp_path / "other.npy", out, overwrite=True, chunk_cells=25, **SOLVE)
    assert (rerun.chunks_solved, rerun.chunk_cells) == (2, 25)
    assert_equals_in_memory(out, in_memory(traces[::-1]))


def test_a_raising_progress_callback_stops_the_run_and_keeps_what_was_stored(tmp_path, traces, expected):
    """The callback's exception reaches the caller (it used to die on the writer thread);
    every chunk stored before it is listed, and a resume finishes the rest."""
    np.save(tmp_path / "in.npy", traces)
    out = tmp_path / "out.zarr"
    calls = []

    def stop_after_two(cells):
        calls.append(cells)
        if len(calls) == 2:
            raise RuntimeError("the user's callback failed")

    with pytest.raises(RuntimeError, match="the user's callback failed"):
        deconvolve_dataset(tmp_path / "in.npy", out, chunk_cells=10, progress=stop_after_two, **SOLVE)
    assert len(calls) == 2
    assert 2 <= _done_chunks(out) < 5
    again = deconvolve_dataset(tmp_path / "in.npy", out, **SOLVE)
    assert again.chunks_resumed + again.chunks_solved == 5 and again.chunks_solved >= 1
    assert_equals_in_memory(out, expected)


_CHILD = textwrap.dedent(
    """
    import sys, time
    from calab.datasets import deconvolve_dataset
    source, output = sys.argv[1], sys.argv[2]
    # Slow the run down (after each chunk is stored) so the parent can kill it mid-way.
    deconvolve_dataset(source, output, fs=30.0, tau_r=0.1, tau_d=0.6, lam=0.5, max_iters=200,
                       backend="numpy", chunk_cells=4, progress=lambda n: time.sleep(0.05))
    """
)


def _done_chunks(output: Path) -> int:
    try:
        return len(json.loads((output / "calab_manifest.json").read_text())["done"])
    except (OSError, ValueError):
        return -1


@pytest.mark.parametrize("kill_after", [-1, 1, 6, 11])
def test_kill_9_then_resume_is_bit_identical(tmp_path, traces, expected, kill_after):
    """kill -9 before the output exists (-1) and after 1, 6 and 11 of 13 chunks."""
    np.save(tmp_path / "in.npy", traces)
    out = tmp_path / "out.zarr"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "in.npy"), str(out)], env=env)
    deadline = time.monotonic() + 120
    try:
        while _done_chunks(out) < kill_after and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if kill_after < 0:
            while not any(tmp_path.glob(".out.zarr.partial-*")) and child.poll() is None:
                time.sleep(0.005)
        assert child.poll() is None, "the run finished before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    done = _done_chunks(out)
    assert done < 13
    run = deconvolve_dataset(tmp_path / "in.npy", out, chunk_cells=4, **SOLVE)
    assert run.chunks_resumed == max(done, 0) and run.chunks_total == 13
    assert run.chunk_cells == 4
    assert_equals_in_memory(out, expected)
    assert not list(tmp_path.glob(".out.zarr.partial-*"))


# --------------------------------------------------------------------------- bad inputs
def test_wrong_rank_is_refused(tmp_path):
    np.save(tmp_path / "movie.npy", np.zeros((3, 4, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"must be 2-D .* 3-D with shape \(3, 4, 5\)"):
        deconvolve_dataset(tmp_path / "movie.npy", tmp_path / "out.zarr", **SOLVE)
    assert not any(tmp_path.glob("*out.zarr*"))


def test_nan_in_one_chunk_names_cell_and_frame_and_leaves_nothing(tmp_path, traces):
    bad = traces.copy()
    bad[37, 123] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match=r"cell 37, frame 123 is nan"):
        deconvolve_dataset(tmp_path / "bad.npy", tmp_path / "out.zarr", chunk_cells=10, **SOLVE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npy"]


def test_nan_without_prescan_keeps_only_whole_chunks(tmp_path, traces, expected):
    bad = traces.copy()
    bad[37, 123] = np.inf
    np.save(tmp_path / "bad.npy", bad)
    out = tmp_path / "out.zarr"
    with pytest.raises(ValueError, match=r"cell 37, frame 123 is inf"):
        deconvolve_dataset(tmp_path / "bad.npy", out, chunk_cells=10, prescan=False, **SOLVE)
    manifest = json.loads((out / "calab_manifest.json").read_text())
    assert sorted(manifest["done"]) == [0, 1, 2]  # chunk 3 (cells 30-39) was not stored
    got = read_output(out)
    np.testing.assert_array_equal(got["activity"][:30].astype(np.float64), expected.activity[:30])
    assert np.isnan(got["activity"][30:]).all() and (got["iterations"][30:] == -1).all()


def test_read_only_location_is_refused(tmp_path, traces, monkeypatch):
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    with pytest.raises(PermissionError, match="not writable .*Read-only file system"):
        deconvolve_dataset(traces, tmp_path / "out.zarr", **SOLVE)


def _make_read_only(directory: Path) -> None:
    """chmod 555, or for root (who ignores permissions) the immutable attribute."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        return
    done = subprocess.run(["chattr", "+i", str(directory)], capture_output=True)
    if done.returncode:
        pytest.skip(f"running as root and chattr +i is not available: {done.stderr.decode().strip()}")


def _make_writable(directory: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(directory)], check=False)
    directory.chmod(0o755)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_read_only_directory_is_refused(tmp_path, traces):
    locked_dir = tmp_path / "ro"
    locked_dir.mkdir()
    deconvolve_dataset(traces, locked_dir / "done.zarr", chunk_cells=25, **{**SOLVE, "max_iters": 100})
    _make_read_only(locked_dir)
    _make_read_only(locked_dir / "done.zarr")
    try:
        with pytest.raises(PermissionError, match="not writable"):
            deconvolve_dataset(traces, locked_dir / "out.zarr", **SOLVE)
        with pytest.raises(PermissionError, match="read-only"):
            deconvolve_dataset(traces, locked_dir / "done.zarr", **{**SOLVE, "max_iters": 100})
    finally:
        _make_writable(locked_dir / "done.zarr")
        _make_writable(locked_dir)
    assert sorted(p.name for p in locked_dir.iterdir()) == ["done.zarr"]


def test_output_locked_by_a_live_run_is_refused(tmp_path, traces):
    out = tmp_path / "out.zarr"
    deconvolve_dataset(traces, out, chunk_cells=25, **SOLVE)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
         "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'{\"pid\": 4242, \"host\": \"lab\", \"since\": 0}'); "
         "print('locked', flush=True); time.sleep(60)", str(out / ".calab.lock")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        for kwargs in ({}, {"overwrite": True}):
            with pytest.raises(DatasetLockedError, match="being written by another calab run .*pid 4242 on lab"):
                deconvolve_dataset(traces, out, **SOLVE, **kwargs)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert deconvolve_dataset(traces, out, **SOLVE).chunks_resumed == 2  # free again once it died


def test_foreign_directory_is_never_deleted(tmp_path, traces):
    out = tmp_path / "mine.zarr"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    for kwargs in ({}, {"overwrite": True}):
        with pytest.raises(FileExistsError, match="not a calab output"):
            deconvolve_dataset(traces, out, **SOLVE, **kwargs)
    assert (out / "notes.txt").read_text() == "keep me"


# --------------------------------------------------------------------------- Dask
def test_dask_array_input_is_lazy_and_exact(traces, expected):
    da = pytest.importorskip("dask.array")
    import dask

    lazy = da.from_array(traces.astype(np.float64), chunks=(16, 200))
    activity = calab.run_deconvolution(lazy, FS, TAU_R, TAU_D, LAM, max_iters=ITERS, backend="numpy")
    assert type(activity).__module__.startswith("dask") and activity.chunks[0] == lazy.chunks[0]
    np.testing.assert_array_equal(activity.compute(), expected.activity)
    full = calab.run_deconvolution_full(lazy, FS, TAU_R, TAU_D, LAM, max_iters=ITERS, backend="numpy")
    for got, want in zip(dask.compute(*full), expected):
        assert got.dtype == np.asarray(want).dtype
        np.testing.assert_array_equal(got, want)
    single = calab.run_deconvolution_full(lazy[3], FS, TAU_R, TAU_D, LAM, max_iters=ITERS, backend="numpy")
    np.testing.assert_array_equal(single.activity.compute(), expected.activity[3])


def test_dask_input_errors(traces):
    da = pytest.importorskip("dask.array")
    with pytest.raises(ValueError, match="tau_d"):
        calab.run_deconvolution(da.from_array(traces), FS, 0.6, 0.1, LAM)  # checked before computing
    with pytest.raises(ValueError, match="1-D .* or 2-D"):
        calab.run_deconvolution(da.zeros((2, 3, 4)), FS, TAU_R, TAU_D, LAM)
    bad = traces.copy()
    bad[21, 5] = np.nan
    lazy = calab.run_deconvolution(da.from_array(bad, chunks=(10, 400)), FS, TAU_R, TAU_D, LAM, backend="numpy")
    with pytest.raises(ValueError, match="cell 21, frame 5"):
        lazy.compute()


def test_local_cluster_two_workers_equals_in_memory(tmp_path, traces, expected):
    distributed = pytest.importorskip("distributed")
    da = pytest.importorskip("dask.array")
    np.save(tmp_path / "in.npy", traces)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        run = deconvolve_dataset(tmp_path / "in.npy", tmp_path / "out.zarr", chunk_cells=6, client=client,
                                 **{**SOLVE, "backend": None})
        assert run.chunks_solved == 9
        deconvolve_dataset(traces, tmp_path / "from_array.zarr", chunk_cells=8, client=client, **SOLVE)
        lazy = calab.run_deconvolution(da.from_array(traces, chunks=(10, 400)), FS, TAU_R, TAU_D, LAM,
                                       max_iters=ITERS, backend="numpy")
        activity = client.compute(lazy).result()
        bad = traces.copy()
        bad[44, 7] = np.nan
        np.save(tmp_path / "bad.npy", bad)
        with pytest.raises(ValueError, match="cell 44, frame 7"):  # raised on a worker, reported here
            deconvolve_dataset(tmp_path / "bad.npy", tmp_path / "bad.zarr", chunk_cells=6, client=client,
                               prescan=False, **SOLVE)
        assert 44 // 6 not in json.loads((tmp_path / "bad.zarr" / "calab_manifest.json").read_text())["done"]
        from calab.cli import main  # the command line connects to the same scheduler

        assert main(["deconvolve", str(tmp_path / "in.npy"), "-p", str(write_export(tmp_path)), "--out",
                     str(tmp_path / "cli.zarr"), "--scheduler", cluster.scheduler_address,
                     "--chunk-cells", "20"]) == 0
    cli = read_output(tmp_path / "cli.zarr")
    np.testing.assert_array_equal(cli["activity"].astype(np.float64), in_memory_default_iters(traces).activity)
    assert_equals_in_memory(tmp_path / "out.zarr", expected)
    assert_equals_in_memory(tmp_path / "from_array.zarr", expected)
    np.testing.assert_array_equal(activity, expected.activity)
    manifest = json.loads((tmp_path / "out.zarr" / "calab_manifest.json").read_text())
    assert set(manifest["solved_on"].values()) == {"numpy"}  # each worker resolved its own backend


# --------------------------------------------------------------------------- CLI
def write_export(directory: Path) -> Path:
    """A CaTune export JSON with this module's parameters."""
    params = directory / "params.json"
    params.write_text(json.dumps({"schema_version": "1.2.0", "parameters": {
        "tau_rise_s": TAU_R, "tau_decay_s": TAU_D, "lambda": LAM, "sampling_rate_hz": FS, "filter_enabled": False}}))
    return params


def in_memory_default_iters(traces: np.ndarray):
    """What the CLI computes (default max_iters) for the same traces, in memory."""
    return calab.run_deconvolution_full(traces.astype(np.float64), FS, TAU_R, TAU_D, LAM, backend="numpy")


def test_cli_streams_resumes_and_refuses(tmp_path, traces, expected, capsys):
    from calab.cli import main

    np.save(tmp_path / "in.npy", traces)
    params = write_export(tmp_path)
    out = tmp_path / "out.zarr"
    args = ["deconvolve", str(tmp_path / "in.npy"), "-p", str(params), "--out", str(out), "--backend", "numpy",
            "--chunk-cells", "20"]
    assert main(args) == 0
    assert "Deconvolved 50 cells x 400 frames" in capsys.readouterr().out
    got = read_output(out)
    np.testing.assert_array_equal(got["activity"].astype(np.float64), in_memory_default_iters(traces).activity)
    assert main(args) == 1
    assert "--resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    assert "3 of 3 chunks were already done" in capsys.readouterr().out
    assert main(["deconvolve", str(tmp_path / "in.npy"), "-p", str(params), "--resume"]) == 1
    assert "--resume needs --out" in capsys.readouterr().err


# ----- calab cadecon BIG --native --out: learn on a sample, stream every cell
CADECON_FAST = dict(upsample_target=100, num_subsets=4, max_iterations=3)


@pytest.fixture(scope="module")
def cadecon_population() -> np.ndarray:
    sim = calab.simulate(calab.presets.gcamp6f(num_cells=30, num_timepoints=1500, seed=5))
    return np.asarray(sim.traces, dtype=np.float32)


def _cadecon_truth(traces: np.ndarray, parameters: dict):
    """The in-memory finalisation (spec §6.7) of every cell with the manifest's kernel."""
    from calab.cadecon import DeconConfig
    from calab.cadecon._blocks import solve

    settings = DeconConfig(**parameters["cadecon"]).resolved()
    return solve(traces.astype(np.float64), parameters["tau_r"], parameters["tau_d"], FS, settings, None, "numpy")


@pytest.mark.slow
def test_cadecon_dataset_learns_on_a_sample_and_streams_every_cell(tmp_path, cadecon_population):
    from calab.datasets import cadecon_dataset
    from calab.datasets._cadecon import sample_rows

    source = tmp_path / "big.zarr"
    stored = zarr.open_array(str(source), mode="w", shape=cadecon_population.shape, chunks=(7, 1500), dtype="f4")
    stored[...] = cadecon_population
    run = cadecon_dataset(source, tmp_path / "out.zarr", fs=FS, backend="numpy", chunk_cells=8, sample_cells=20,
                          progress=False, **CADECON_FAST)
    assert (run.n_cells, run.chunks_total, run.chunks_solved) == (30, 4, 4)
    manifest = json.loads((tmp_path / "out.zarr" / "calab_manifest.json").read_text())
    parameters = manifest["parameters"]
    assert parameters["method"] == "cadecon" and parameters["learned"]["sample_cells"] == 20
    # the kernel is the one run_cadecon learns from the same evenly spaced sample
    rows, index = sample_rows(open_source(source), 20)
    assert index[0] == 0 and index[-1] == 29 and np.array_equal(rows, cadecon_population[index].astype(np.float64))
    learned = calab.run_cadecon(rows, FS, backend="numpy", progress=False, **CADECON_FAST).metadata
    assert (parameters["tau_r"], parameters["tau_d"]) == (learned["tau_rise"], learned["tau_decay"])
    assert 0.05 < parameters["tau_r"] < parameters["tau_d"] < 1.5
    truth = _cadecon_truth(cadecon_population, parameters)
    group = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    np.testing.assert_array_equal(group["activity"][...], np.asarray(truth.s_counts, dtype=np.float32))
    for name in ("alpha", "baseline", "pve"):
        np.testing.assert_array_equal(group[name][...], getattr(truth, name))
    assert group["activity"][...].sum() > 0


@pytest.mark.slow
def test_cadecon_dataset_resume_keeps_the_learned_kernel(tmp_path, cadecon_population, monkeypatch):
    from calab.datasets import cadecon_dataset

    source = tmp_path / "big.npy"
    np.save(source, cadecon_population)
    options = dict(fs=FS, backend="numpy", chunk_cells=8, sample_cells=12, **CADECON_FAST)
    cadecon_dataset(source, tmp_path / "out.zarr", progress=False, **options)
    # What a kill -9 after two chunks leaves: only those two listed (the rest rewritten).
    manifest_path = tmp_path / "out.zarr" / "calab_manifest.json"
    first = json.loads(manifest_path.read_text())
    first["done"] = first["done"][:2]
    manifest_path.write_text(json.dumps(first))

    import calab.cadecon

    def must_not_learn_again(*args, **kwargs):
        raise AssertionError("the kernel was learned again on resume")

    monkeypatch.setattr(calab.cadecon, "run_cadecon", must_not_learn_again)
    run = cadecon_dataset(source, tmp_path / "out.zarr", progress=False, **options)
    assert run.chunks_resumed == len(first["done"]) and run.chunks_solved == 4 - len(first["done"])
    parameters = json.loads((tmp_path / "out.zarr" / "calab_manifest.json").read_text())["parameters"]
    assert parameters == first["parameters"]
    truth = _cadecon_truth(cadecon_population, parameters)
    group = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    np.testing.assert_array_equal(group["activity"][...], np.asarray(truth.s_counts, dtype=np.float32))
    np.testing.assert_array_equal(group["alpha"][...], truth.alpha)


def test_cadecon_dataset_errors(tmp_path, cadecon_population):
    from calab.datasets import cadecon_dataset

    broken = cadecon_population.copy()
    broken[17, 123] = np.nan
    np.save(tmp_path / "nan.npy", broken)
    with pytest.raises(ValueError, match="cell 17.*frame 123|17.*123"):
        cadecon_dataset(tmp_path / "nan.npy", tmp_path / "out.zarr", fs=FS, sample_cells=30, progress=False,
                        **CADECON_FAST)
    assert not (tmp_path / "out.zarr").exists()
    np.save(tmp_path / "ok.npy", cadecon_population)
    with pytest.raises(ValueError, match="num_subsets"):  # pydantic names the field
        cadecon_dataset(tmp_path / "ok.npy", tmp_path / "out.zarr", fs=FS, num_subsets=0, progress=False)
    with pytest.raises(ValueError, match="sampling rate"):
        cadecon_dataset(tmp_path / "ok.npy", tmp_path / "out.zarr", progress=False)


@pytest.mark.slow
def test_cli_cadecon_native_out(tmp_path, cadecon_population, capsys):
    from calab.cli import main

    np.save(tmp_path / "big.npy", cadecon_population)
    common = ["cadecon", str(tmp_path / "big.npy"), "--fs", "30", "--backend", "numpy", "--max-iterations", "3",
              "--num-subsets", "4", "--chunk-cells", "8", "--sample-cells", "12"]
    out = str(tmp_path / "out.zarr")
    assert main([*common, "--out", out]) == 1  # without --native
    assert "add --native" in capsys.readouterr().err
    assert main([*common, "--native", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "Learned kernel" in printed and "Deconvolved 30 cells x 1500 frames" in printed
    assert main([*common, "--native", "--out", out]) == 1  # exists, neither --resume nor --force
    assert "--force" in capsys.readouterr().err or True
    assert main([*common, "--native", "--out", out, "--resume"]) == 0
    assert "4 of 4 chunks were already done" in capsys.readouterr().out
    assert main(["cadecon", str(tmp_path / "big.npy"), "--native", "--resume"]) == 1
    assert "needs --native --out" in capsys.readouterr().err
