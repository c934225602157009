"""Whole datasets against damage: chunk files, manifests and inputs that lie.

A resumed run must not trust what it cannot check.  Finished chunks of ``activity`` or
``baseline`` truncated, emptied, overwritten with random bytes or deleted, after a full or
a partial run, are found on resume and solved again (with a warning naming the chunk);
the output then equals the in-memory result bit for bit.  A manifest with nonsense in it
is a :class:`DatasetDamagedError` naming the field; an input whose middle cells changed is
a :class:`DatasetMismatchError`.  Damaged inputs get clear errors, not raw ones.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import calab
from calab.datasets import (
    DatasetDamagedError,
    DatasetDamageWarning,
    DatasetMismatchError,
    deconvolve_dataset,
    open_source,
)

zarr = pytest.importorskip("zarr")

FS, TAU_R, TAU_D, LAM, ITERS = 30.0, 0.1, 0.6, 0.5, 100
SOLVE = dict(fs=FS, tau_r=TAU_R, tau_d=TAU_D, lam=LAM, max_iters=ITERS, backend="numpy", chunk_cells=6)
CELLS, FRAMES, CHUNKS = 24, 240, 4


def make_traces(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(5 * TAU_D * FS)) / FS
    kernel = np.exp(-t / TAU_D) - np.exp(-t / TAU_R)
    spikes = rng.poisson(0.05, size=(CELLS, FRAMES)).astype(np.float64)
    calcium = np.stack([np.convolve(row, kernel)[:FRAMES] for row in spikes])
    return (100.0 + 20.0 * calcium + rng.normal(0.0, 1.0, size=(CELLS, FRAMES))).astype(np.float32)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The input, the expected result, and pristine full and partial outputs to copy."""
    root = tmp_path_factory.mktemp("hostile-datasets")
    traces = make_traces()
    np.save(root / "in.npy", traces)
    expected = calab.run_deconvolution_full(traces.astype(np.float64), FS, TAU_R, TAU_D, LAM, max_iters=ITERS,
                                            backend="numpy")
    deconvolve_dataset(root / "in.npy", root / "full.zarr", **SOLVE)
    calls = []

    def stop_after_two(cells):
        calls.append(cells)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user stopping the run

    with pytest.raises(KeyboardInterrupt):
        deconvolve_dataset(root / "in.npy", root / "partial.zarr", progress=stop_after_two, **SOLVE)
    assert sorted(_manifest(root / "partial.zarr")["done"]) == [0, 1]
    return root, traces, expected


def _manifest(output: Path) -> dict:
    return json.loads((output / "calab_manifest.json").read_text())


def _write_manifest(output: Path, manifest: dict) -> None:
    (output / "calab_manifest.json").write_text(json.dumps(manifest))


def _copy(workspace, which: str, tmp_path: Path) -> Path:
    root = workspace[0]
    target = tmp_path / "out.zarr"
    shutil.copytree(root / f"{which}.zarr", target)
    (target / ".calab.lock").unlink(missing_ok=True)
    return target


def _chunk_file(output: Path, array: str, index: int) -> Path:
    node = zarr.open_group(str(output), mode="r")[array]
    if not hasattr(node.metadata, "encode_chunk_key"):
        pytest.skip("chunk file layout of this zarr version")
    coords = (index, 0) if node.ndim == 2 else (index,)
    return output / array / node.metadata.encode_chunk_key(coords)


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "emptied":
        path.write_bytes(b"")
    elif how == "random bytes":
        path.write_bytes(np.random.default_rng(1).bytes(len(data)))
    elif how == "deleted":
        path.unlink()
    else:  # pragma: no cover
        raise AssertionError(how)


def _assert_equals_in_memory(output: Path, expected) -> None:
    group = zarr.open_group(str(output), mode="r")
    np.testing.assert_array_equal(group["activity"][...].astype(np.float64), expected.activity)
    np.testing.assert_array_equal(group["baseline"][...], expected.baseline)
    np.testing.assert_array_equal(group["iterations"][...], expected.iterations)
    np.testing.assert_array_equal(group["converged"][...], expected.converged)


# --------------------------------------------------------------------------- damaged chunks
@pytest.mark.parametrize("how", ["truncated", "emptied", "random bytes", "deleted"])
@pytest.mark.parametrize("array", ["activity", "baseline"])
@pytest.mark.parametrize("which, chunk", [("full", 2), ("partial", 1)])
def test_a_damaged_finished_chunk_is_solved_again_on_resume(workspace, tmp_path, which, chunk, array, how):
    # Before: "0 solved, 4 resumed", then a Zstd error on read or the fill value (NaN).
    _, _, expected = workspace
    output = _copy(workspace, which, tmp_path)
    resumed_before = len(_manifest(output)["done"])
    _damage(_chunk_file(output, array, chunk), how)
    with pytest.warns(DatasetDamageWarning, match=rf"finished chunk {chunk} \(cells {6 * chunk}-{6 * chunk + 5}\) "
                                                  rf"is damaged: {array}"):
        run = deconvolve_dataset(workspace[0] / "in.npy", output, **SOLVE)
    assert run.chunks_resumed == resumed_before - 1
    assert run.chunks_solved == CHUNKS - run.chunks_resumed
    _assert_equals_in_memory(output, expected)
    assert sorted(_manifest(output)["done"]) == list(range(CHUNKS))
    with warnings.catch_warnings():  # repaired: the next resume trusts every chunk
        warnings.simplefilter("error", DatasetDamageWarning)
        again = deconvolve_dataset(workspace[0] / "in.npy", output, **SOLVE)
    assert (again.chunks_solved, again.chunks_resumed) == (0, CHUNKS)


def test_an_intact_output_resumes_without_warnings(workspace, tmp_path):
    output = _copy(workspace, "full", tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetDamageWarning)
        run = deconvolve_dataset(workspace[0] / "in.npy", output, **SOLVE)
    assert (run.chunks_solved, run.chunks_resumed) == (0, CHUNKS)


def test_a_chunk_overwritten_with_another_valid_chunk_is_caught_by_its_checksum(workspace, tmp_path):
    """Readable, finite, and wrong: only the checksum tells."""
    output = _copy(workspace, "full", tmp_path)
    source, target = _chunk_file(output, "activity", 0), _chunk_file(output, "activity", 3)
    target.write_bytes(source.read_bytes())
    with pytest.warns(DatasetDamageWarning, match="chunk 3 .* activity differs from what was written"):
        deconvolve_dataset(workspace[0] / "in.npy", output, **SOLVE)
    _assert_equals_in_memory(output, workspace[2])


@pytest.mark.parametrize("how", ["deleted", "random bytes"])
def test_an_output_without_checksums_is_still_checked(workspace, tmp_path, how):
    """A manifest without ``chunk_crc32`` (an older calab's): unreadable chunks and chunks
    that read as the fill value are found all the same."""
    output = _copy(workspace, "full", tmp_path)
    manifest = _manifest(output)
    del manifest["chunk_crc32"], manifest["input_crc32"]
    _write_manifest(output, manifest)
    _damage(_chunk_file(output, "activity", 1), how)
    with pytest.warns(DatasetDamageWarning, match="finished chunk 1"):
        deconvolve_dataset(workspace[0] / "in.npy", output, **SOLVE)
    _assert_equals_in_memory(output, workspace[2])
    assert set(_manifest(output)["chunk_crc32"]) == {"1"}  # what this run wrote is recorded


# --------------------------------------------------------------------------- the manifest
@pytest.mark.parametrize("change, fragment", [
    ({"done": ["abc"]}, "'done' must hold chunk numbers 0 to 3, found 'abc'"),
    ({"done": None}, "'done' must be a list of finished chunk numbers, found None"),
    ({"done": "0,1"}, "'done' must be a list"),
    ({"done": [7]}, "'done' must hold chunk numbers 0 to 3, found 7"),
    ({"done": [True]}, "'done' must hold chunk numbers"),
    ({"done": [1, 1]}, "'done' lists a chunk twice"),
    ({"chunk_cells": 0}, "'chunk_cells' must be a positive integer"),
    ({"chunk_cells": "6"}, "'chunk_cells' must be a positive integer"),
    ({"n_cells": None}, "'n_cells' must be a positive integer"),
    ({"parameters": []}, "'parameters' must be an object"),
    ({"solved_on": 3}, "'solved_on' must be an object"),
    ({"chunk_crc32": {"0": "x"}}, "'chunk_crc32' of chunk 0 must map array names to integers"),
    ({"input_crc32": {"0": 1.5}}, "'input_crc32' of chunk 0 must be an integer"),
])
def test_a_manifest_with_bad_fields_is_a_clear_error(workspace, tmp_path, change, fragment):
    # Before: raw ValueError (int('abc')), KeyError ('done') or TypeError (None).
    output = _copy(workspace, "full", tmp_path)
    _write_manifest(output, {**_manifest(output), **change})
    with pytest.raises(DatasetDamagedError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as caught:
        deconvolve_dataset(workspace[0] / "in.npy", output, **SOLVE)
    assert "overwrite=True" in str(caught.value)
    # overwrite starts again from scratch and gives the right answer
    deconvolve_dataset(workspace[0] / "in.npy", output, overwrite=True, **SOLVE)
    _assert_equals_in_memory(output, workspace[2])


def test_a_manifest_without_done_or_not_json_is_a_clear_error(workspace, tmp_path):
    output = _copy(workspace, "full", tmp_path)
    manifest = _manifest(output)
    del manifest["done"]
    _write_manifest(output, manifest)
    with pytest.raises(DatasetDamagedError, match="'done' must be a list"):
        deconvolve_dataset(workspace[0] / "in.npy", output, **SOLVE)
    (output / "calab_manifest.json").write_text("{not json")
    with pytest.raises(DatasetDamagedError, match="unreadable"):
        deconvolve_dataset(workspace[0] / "in.npy", output, **SOLVE)


# --------------------------------------------------------------------------- a changed input
def test_changed_middle_cells_are_refused_on_resume(workspace, tmp_path):
    """The first/last-cell fingerprint cannot see a middle cell change; the per-chunk
    input checksums can, before anything is solved."""
    root, traces, _ = workspace
    output = _copy(workspace, "partial", tmp_path)
    changed = traces.copy()
    changed[8, 100] += 1.0  # chunk 1, finished
    np.save(tmp_path / "changed.npy", changed)
    assert open_source(tmp_path / "changed.npy").fingerprint() == open_source(root / "in.npy").fingerprint()
    before = _manifest(output)
    with pytest.raises(DatasetMismatchError, match=r"cells 6-11 of .*changed\.npy differ from those the output was made from"):
        deconvolve_dataset(tmp_path / "changed.npy", output, **SOLVE)
    assert _manifest(output) == before  # refused before touching anything


def test_a_changed_pending_chunk_is_refused_when_reached_without_prescan(workspace, tmp_path):
    root, traces, _ = workspace
    output = _copy(workspace, "partial", tmp_path)
    changed = traces.copy()
    changed[20, 5] -= 2.0  # chunk 3, pending; its input checksum is known from the first prescan
    np.save(tmp_path / "changed.npy", changed)
    with pytest.raises(DatasetMismatchError, match="cells 18-23"):
        deconvolve_dataset(tmp_path / "changed.npy", output, prescan=False, **SOLVE)
    assert 3 not in _manifest(output)["done"]


# --------------------------------------------------------------------------- damaged inputs
def _zarr_input(path: Path, traces: np.ndarray, fill_value: float) -> Path:
    group = zarr.open_group(str(path), mode="w")
    array = group.create_array("C", shape=traces.shape, chunks=(6, FRAMES), dtype=np.float32, fill_value=fill_value)
    array[...] = traces
    return path


def test_a_zarr_input_with_a_missing_chunk_warns(workspace, tmp_path):
    _, traces, _ = workspace
    store = _zarr_input(tmp_path / "in.zarr", traces, 0.0)
    (store / "C" / zarr.open_group(str(store))["C"].metadata.encode_chunk_key((2, 0))).unlink()
    with pytest.warns(DatasetDamageWarning, match=r"1 of its 4 Zarr chunks are not stored, so those samples read as the fill value 0\.0"):
        open_source(store)


def test_a_zarr_input_with_a_missing_chunk_and_nan_fill_fails_naming_the_cell(workspace, tmp_path):
    _, traces, _ = workspace
    store = _zarr_input(tmp_path / "in.zarr", traces, float("nan"))
    (store / "C" / zarr.open_group(str(store))["C"].metadata.encode_chunk_key((1, 0))).unlink()
    with pytest.warns(DatasetDamageWarning), pytest.raises(ValueError, match="cell 6, frame 0 is nan"):
        deconvolve_dataset(store, tmp_path / "out.zarr", **SOLVE)
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.parametrize("node", ["root", "array"])
def test_a_corrupt_zarr_json_names_the_file(workspace, tmp_path, node):
    # Before: a raw json.JSONDecodeError (array) or "not a Zarr store" (root).
    store = _zarr_input(tmp_path / "in.zarr", workspace[1], 0.0)
    damaged = store / "zarr.json" if node == "root" else store / "C" / "zarr.json"
    damaged.write_text("{garbage")
    with pytest.raises(ValueError, match=rf"{damaged.name} is corrupt \(not valid JSON") as caught:
        open_source(store)
    assert str(damaged) in str(caught.value)
    with pytest.raises(ValueError, match="is corrupt"):
        calab.load_minian(store, fs=FS)
    damaged.write_text('{"zarr_format": 3, "node_type": "banana"}')
    with pytest.raises(ValueError, match="is not valid Zarr metadata"):
        open_source(store)


def test_zarr_format_on_a_file_is_a_clear_error(workspace, tmp_path):
    # Before: NotADirectoryError.
    np.save(tmp_path / "traces.npy", workspace[1])
    with pytest.raises(ValueError, match=r"traces\.npy is a file, not a Zarr store .* leave fmt out"):
        open_source(tmp_path / "traces.npy", fmt="zarr")
    with pytest.raises(ValueError, match="is a directory, not a .npy file"):
        open_source(tmp_path, fmt="npy")


@pytest.mark.parametrize("content", [b"", b"garbage, not a .npy file at all" * 10, bytes(range(256)) * 4])
def test_a_garbage_npy_is_not_called_a_pickle(tmp_path, content):
    # Before: "stores Python objects (a pickled object array)" (NumPy takes it for a pickle).
    path = tmp_path / "traces.npy"
    path.write_bytes(content)
    for attempt in (lambda: open_source(path), lambda: deconvolve_dataset(path, tmp_path / "o.zarr", **SOLVE)):
        with pytest.raises(ValueError, match="not a valid .npy file") as caught:
            attempt()
        assert "pickle" not in str(caught.value)


def test_a_real_object_npy_is_still_called_one(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([1, "a"], dtype=object), allow_pickle=True)
    with pytest.raises(TypeError, match="pickled object array"):
        open_source(path)


def test_a_truncated_npy_says_so(workspace, tmp_path):
    path = tmp_path / "traces.npy"
    np.save(path, workspace[1])
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="is truncated"):
        open_source(path)
    os.remove(path)
