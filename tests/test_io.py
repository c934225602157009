"""save_for_tuning / load_tuning_data / load_export_params / deconvolve_from_export.

Independent truth: the files in ``tests/golden_io/`` were written by the published
``calab==0.3.0`` (``tools/make_io_golden.py``), so "byte-identical to the golden file"
means "byte-compatible with the reference".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import calab
from calab import io as calab_io
from conftest import assert_activity_matches

GOLDEN = Path(__file__).parent / "golden_io"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
SAVE_CASES = MANIFEST["save_cases"]


# --------------------------------------------------------------------------- golden round trips
@pytest.mark.parametrize("stem", sorted(SAVE_CASES))
def test_save_writes_the_reference_bytes(tmp_path, stem):
    case = SAVE_CASES[stem]
    traces = np.load(GOLDEN / case["input"])
    calab.save_for_tuning(traces, case["fs"], tmp_path / stem, metadata=case["metadata"])
    for suffix in (".npy", "_metadata.json"):
        assert (tmp_path / f"{stem}{suffix}").read_bytes() == (GOLDEN / f"{stem}{suffix}").read_bytes()


@pytest.mark.parametrize("stem", sorted(SAVE_CASES))
def test_load_reads_reference_files_bit_for_bit(stem):
    traces, meta = calab.load_tuning_data(GOLDEN / stem)
    source = np.load(GOLDEN / SAVE_CASES[stem]["input"])
    expected = np.ascontiguousarray(np.atleast_2d(source), dtype="<f8")
    assert traces.dtype == np.dtype("<f8") and traces.flags.c_contiguous
    assert traces.shape == expected.shape
    assert traces.tobytes() == expected.tobytes()  # bitwise: NaN, inf and -0.0 included
    assert meta == json.loads((GOLDEN / f"{stem}_metadata.json").read_text())
    assert (meta["num_cells"], meta["num_timepoints"]) == expected.shape


def test_round_trip_ours_to_ours_preserves_bits_and_fields(tmp_path):
    rng = np.random.default_rng(3)
    traces = rng.standard_normal((5, 77)).astype(np.float32)
    traces[2, 5] = np.nan
    meta_in = {"subject": "mouse_01", "rig": {"objective": "16x", "zoom": 2}, "session": 3}
    calab.save_for_tuning(traces, 29.97, tmp_path / "rec", metadata=meta_in)
    loaded, meta = calab.load_tuning_data(tmp_path / "rec")
    assert loaded.tobytes() == traces.astype(np.float64).tobytes()
    assert meta == {**meta_in, "schema_version": "1.0.0", "sampling_rate_hz": 29.97,
                    "num_cells": 5, "num_timepoints": 77, "dtype": "<f8"}
    assert list(meta)[:3] == ["subject", "rig", "session"]  # caller keys first


def test_sidecar_layout_matches_documentation(tmp_path):
    calab.save_for_tuning(np.ones(4), 30, tmp_path / "x", metadata={"num_cells": 99, "a": 1})
    text = (tmp_path / "x_metadata.json").read_text()
    assert not text.endswith("\n")
    meta = json.loads(text)
    # a conflicting key keeps its position but takes the built-in value; fs stored as given
    assert list(meta) == ["num_cells", "a", "schema_version", "sampling_rate_hz", "num_timepoints", "dtype"]
    assert meta["num_cells"] == 1 and meta["sampling_rate_hz"] == 30 and isinstance(meta["sampling_rate_hz"], int)
    header = (tmp_path / "x.npy").read_bytes()[:80]
    assert b"'descr': '<f8', 'fortran_order': False, 'shape': (1, 4)" in header


def test_numpy_scalars_and_arrays_in_metadata_are_written(tmp_path):
    # The reference leaves a .npy without sidecar for fs=np.float32(30) (json cannot
    # serialise it); we convert NumPy values instead.
    calab.save_for_tuning(np.ones((2, 3)), np.float32(30.0), tmp_path / "x",
                          metadata={"gain": np.float64(1.5), "ids": np.arange(2), "ok": np.bool_(True)})
    meta = json.loads((tmp_path / "x_metadata.json").read_text())
    assert meta["sampling_rate_hz"] == 30.0 and meta["gain"] == 1.5 and meta["ids"] == [0, 1] and meta["ok"] is True


def test_stem_with_npy_suffix_is_not_doubled(tmp_path):
    calab.save_for_tuning(np.ones((1, 3)), 10.0, tmp_path / "rec.npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.npy", "rec_metadata.json"]
    for name in ("rec", "rec.npy", "rec_metadata.json"):
        traces, _ = calab.load_tuning_data(tmp_path / name)
        assert traces.shape == (1, 3)


def test_reference_style_double_suffix_still_loads(tmp_path):
    # calab 0.3.0 turns the stem "rec.npy" into rec.npy.npy + rec.npy_metadata.json.
    np.save(tmp_path / "rec.npy.npy", np.zeros((1, 2)))
    (tmp_path / "rec.npy_metadata.json").write_text(json.dumps({"sampling_rate_hz": 5.0}))
    traces, meta = calab.load_tuning_data(tmp_path / "rec.npy")
    assert traces.shape == (1, 2) and meta["sampling_rate_hz"] == 5.0


# --------------------------------------------------------------------------- save errors
@pytest.mark.parametrize(
    "traces, error, match",
    [
        (np.ones((2, 2, 2)), ValueError, "1D or 2D, got 3D"),
        (np.float64(3.0), ValueError, "1D or 2D, got 0D"),
        (np.ones((0, 5)), ValueError, "empty"),
        (np.ones(3) + 1j, TypeError, "complex"),
        (np.array([1, "a"], dtype=object), TypeError, "non-numeric"),
        (np.array(["1", "2"]), TypeError, "non-numeric dtype"),
    ],
)
def test_save_rejects_bad_traces_before_writing(tmp_path, traces, error, match):
    with pytest.raises(error, match=match):
        calab.save_for_tuning(traces, 30.0, tmp_path / "bad")
    assert list(tmp_path.iterdir()) == []


def test_save_rejects_object_arrays_even_of_numbers_naming_the_conversion(tmp_path):
    # Dtype policy: object data is refused, with the explicit conversion to use.
    with pytest.raises(TypeError, match=r"np.asarray\(data, dtype=float\)"):
        calab.save_for_tuning(np.array([[1, 2.5]], dtype=object), 30.0, tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "fs, error, match",
    [(None, ValueError, "sampling rate"), (0, ValueError, "> 0"), (-3.0, ValueError, "> 0"),
     (float("nan"), ValueError, "finite"), (float("inf"), ValueError, "finite"),
     ("30", TypeError, "number"), (True, TypeError, "number")],
)
def test_save_rejects_missing_or_bad_sampling_rate(tmp_path, fs, error, match):
    with pytest.raises(error, match=match):
        calab.save_for_tuning(np.ones(4), fs, tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


def test_save_rejects_unserialisable_metadata_naming_the_key(tmp_path):
    with pytest.raises(TypeError, match=r"metadata\['when'\]"):
        calab.save_for_tuning(np.ones(4), 30.0, tmp_path / "x", metadata={"when": object()})
    with pytest.raises(TypeError, match="dict"):
        calab.save_for_tuning(np.ones(4), 30.0, tmp_path / "x", metadata=["not", "a", "dict"])
    assert list(tmp_path.iterdir()) == []


def test_save_into_missing_directory_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="Output directory does not exist"):
        calab.save_for_tuning(np.ones(4), 30.0, tmp_path / "nope" / "x")


def test_overwrite_policy(tmp_path):
    calab.save_for_tuning(np.ones(4), 30.0, tmp_path / "x")
    calab.save_for_tuning(np.zeros(4), 30.0, tmp_path / "x")  # default replaces, as published
    assert calab.load_tuning_data(tmp_path / "x")[0].sum() == 0
    with pytest.raises(FileExistsError, match="overwrite"):
        calab.save_for_tuning(np.ones(4), 30.0, tmp_path / "x", overwrite=False)
    assert calab.load_tuning_data(tmp_path / "x")[0].sum() == 0


def test_failed_save_leaves_old_files_intact_and_no_temporaries(tmp_path, monkeypatch):
    calab.save_for_tuning(np.ones((1, 4)), 30.0, tmp_path / "x")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def exploding_write(handle, array, allow_pickle=True):
        handle.write(b"\x93NUMPY partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array", exploding_write)
    with pytest.raises(OSError, match="No space left"):
        calab.save_for_tuning(np.zeros((1, 4)), 30.0, tmp_path / "x")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_written_files_get_normal_permissions(tmp_path):
    calab.save_for_tuning(np.ones(4), 30.0, tmp_path / "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "x.npy").stat().st_mode & 0o777 == 0o666 & ~umask


# --------------------------------------------------------------------------- load errors
def test_load_missing_files_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Trace data file not found: .*nope\.npy\. Expected \.npy"):
        calab.load_tuning_data(tmp_path / "nope")
    np.save(tmp_path / "only.npy", np.ones((1, 3)))
    with pytest.raises(FileNotFoundError, match=r"Metadata file not found: .*only_metadata\.json"):
        calab.load_tuning_data(tmp_path / "only")


def _pair(tmp_path, npy_bytes: bytes, meta: object = None) -> Path:
    (tmp_path / "x.npy").write_bytes(npy_bytes)
    (tmp_path / "x_metadata.json").write_text(
        json.dumps({"sampling_rate_hz": 30.0} if meta is None else meta)
    )
    return tmp_path / "x"


def _npy_bytes(array: np.ndarray, tmp_path) -> bytes:
    np.save(tmp_path / "tmp.npy", array, allow_pickle=True)
    data = (tmp_path / "tmp.npy").read_bytes()
    (tmp_path / "tmp.npy").unlink()
    return data


def test_truncated_npy_is_a_clear_value_error(tmp_path):
    full = _npy_bytes(np.ones((4, 100)), tmp_path)
    stem = _pair(tmp_path, full[: len(full) - 17])
    with pytest.raises(ValueError, match="truncated"):
        calab.load_tuning_data(stem)


@pytest.mark.parametrize("garbage", [b"", b"not a numpy file at all", b"\x93NUMPY\x01\x00\xff\x00{'descr"])
def test_corrupt_npy_is_a_clear_value_error(tmp_path, garbage):
    stem = _pair(tmp_path, garbage)
    with pytest.raises(ValueError, match=r"x\.npy"):
        calab.load_tuning_data(stem)


def test_object_npy_is_never_unpickled(tmp_path):
    stem = _pair(tmp_path, _npy_bytes(np.array([{"a": 1}], dtype=object), tmp_path))
    with pytest.raises(TypeError, match="never unpickles"):
        calab.load_tuning_data(stem)


@pytest.mark.parametrize(
    "array, error, match",
    [(np.ones((2, 2, 2)), ValueError, "3D"), (np.ones((2, 3)) * 1j, TypeError, "complex")],
)
def test_load_rejects_3d_and_complex(tmp_path, array, error, match):
    with pytest.raises(error, match=match):
        calab.load_tuning_data(_pair(tmp_path, _npy_bytes(array, tmp_path)))


@pytest.mark.parametrize(
    "sidecar, match",
    [("{not json", "not valid JSON"), ("[1, 2]", "JSON object"),
     ('{"num_cells": 3, "num_timepoints": 4}', "do not match"),
     ('{"sampling_rate_hz": "fast"}', "sampling_rate_hz"),
     ('{"sampling_rate_hz": -1}', "sampling_rate_hz")],
)
def test_bad_sidecar_is_a_clear_value_error(tmp_path, sidecar, match):
    stem = _pair(tmp_path, _npy_bytes(np.ones((2, 4)), tmp_path))
    (tmp_path / "x_metadata.json").write_text(sidecar)
    with pytest.raises(ValueError, match=match):
        calab.load_tuning_data(stem)


def test_load_returns_stored_dtype_unchanged(tmp_path):
    stem = _pair(tmp_path, _npy_bytes(np.arange(6, dtype=np.float32).reshape(2, 3), tmp_path),
                 {"sampling_rate_hz": None, "num_cells": 2})
    traces, meta = calab.load_tuning_data(stem)
    assert traces.dtype == np.float32 and meta["sampling_rate_hz"] is None


# --------------------------------------------------------------------------- export params
def test_export_params_match_reference_for_every_schema():
    expected = json.loads((GOLDEN / "ref_export_params.json").read_text())
    assert set(expected) == {"export_v1_0.json", "export_v1_1.json", "export_v1_2.json"}
    for name, params in expected.items():
        ours = calab.load_export_params(GOLDEN / name)
        assert ours == params
        assert list(ours) == ["tau_rise", "tau_decay", "lambda_", "fs", "filter_enabled"]


def _export(tmp_path, parameters, **top) -> Path:
    path = tmp_path / "export.json"
    path.write_text(json.dumps({"schema_version": "1.2.0", **top, "parameters": parameters}))
    return path


GOOD = {"tau_rise_s": 0.1, "tau_decay_s": 0.6, "lambda": 0.5, "sampling_rate_hz": 30}


def test_export_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="Export JSON not found"):
        calab.load_export_params(tmp_path / "missing.json")
    with pytest.raises(KeyError, match="lambda"):
        calab.load_export_params(_export(tmp_path, {k: v for k, v in GOOD.items() if k != "lambda"}))
    path = tmp_path / "e.json"
    path.write_text(json.dumps({"tau_rise_s": 0.1}))
    with pytest.raises(KeyError, match="parameters"):
        calab.load_export_params(path)
    path.write_text("{ truncated")
    with pytest.raises(ValueError, match="not valid JSON"):
        calab.load_export_params(path)
    with pytest.raises(ValueError, match="JSON object"):
        calab.load_export_params(_export(tmp_path, [1, 2]))
    with pytest.raises(ValueError, match="tau_rise_s must be a finite number"):
        calab.load_export_params(_export(tmp_path, {**GOOD, "tau_rise_s": "0.1"}))
    with pytest.raises(ValueError, match="sampling_rate_hz must be > 0"):
        calab.load_export_params(_export(tmp_path, {**GOOD, "sampling_rate_hz": 0}))
    with pytest.raises(ValueError, match="sampling_rate_hz must be a finite"):
        calab.load_export_params(_export(tmp_path, {**GOOD, "sampling_rate_hz": None}))
    with pytest.raises(ValueError, match="filter_enabled"):
        calab.load_export_params(_export(tmp_path, {**GOOD, "filter_enabled": "yes"}))
    with pytest.raises(ValueError, match="schema_version '2.0.0'"):
        calab.load_export_params(_export(tmp_path, GOOD, schema_version="2.0.0"))


def test_export_key_error_message_is_readable(tmp_path):
    with pytest.raises(KeyError) as info:
        calab.load_export_params(_export(tmp_path, {"tau_rise_s": 0.1}))
    assert str(info.value).startswith("CaTune export")  # no stray quotes around the sentence


def test_export_without_schema_version_loads(tmp_path):
    path = tmp_path / "flat.json"
    path.write_text(json.dumps({"parameters": GOOD}))
    assert calab.load_export_params(path)["fs"] == 30


# --------------------------------------------------------------------------- deconvolve_from_export
@pytest.mark.parametrize("label, export", [("off", "export_v1_1.json"), ("on", "export_v1_2.json")])
def test_deconvolve_from_export_matches_reference(label, export):
    traces = np.load(GOLDEN / "in_decon.npy")
    reference = np.load(GOLDEN / f"ref_decon_filter_{label}.npy")
    ours = calab.deconvolve_from_export(traces, GOLDEN / export, backend="numpy")
    assert ours.shape == traces.shape  # the reference returns (n,) for (1, n) + filter; 2 rows here
    assert reference.shape == traces.shape
    assert_activity_matches(ours, reference)


@pytest.mark.parametrize("export", ["export_v1_1.json", "export_v1_2.json"])
def test_deconvolve_from_export_keeps_the_input_shape(export):
    trace = np.load(GOLDEN / "in_decon.npy")[:1]
    assert calab.deconvolve_from_export(trace, GOLDEN / export).shape == (1, 300)
    assert calab.deconvolve_from_export(trace[0], GOLDEN / export).shape == (300,)
    full = calab.deconvolve_from_export(trace, GOLDEN / export, return_full=True)
    assert full.activity.shape == (1, 300) and np.shape(full.baseline) == (1,)


def test_deconvolve_from_export_filters_like_bandpass_then_solve():
    traces = np.load(GOLDEN / "in_decon.npy")
    params = calab.load_export_params(GOLDEN / "export_v1_2.json")
    filtered = np.stack([calab.bandpass_filter(row, params["tau_rise"], params["tau_decay"], params["fs"])
                         for row in traces])
    expected = calab.run_deconvolution(filtered, params["fs"], params["tau_rise"], params["tau_decay"],
                                       params["lambda_"])
    np.testing.assert_array_equal(calab.deconvolve_from_export(traces, GOLDEN / "export_v1_2.json"), expected)


def test_deconvolve_from_export_rejects_3d_traces():
    with pytest.raises(ValueError, match="1D or 2D|1-D"):
        calab.deconvolve_from_export(np.ones((2, 2, 50)), GOLDEN / "export_v1_2.json")
    with pytest.raises(ValueError, match="1-D"):
        calab.deconvolve_from_export(np.ones((2, 2, 50)), GOLDEN / "export_v1_1.json")


def test_io_module_imports_no_optional_dependency():
    import subprocess
    import sys

    code = (
        "import sys, calab.io, calab.loaders, calab.cli; "
        "heavy = [m for m in ('h5py', 'zarr', 'pynwb', 'jax', 'cupy', 'tqdm', 'scipy') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_tuning_paths_helper():
    assert calab_io.tuning_paths("a/b") == (Path("a/b.npy"), Path("a/b_metadata.json"))


# --------------------------------------------------------------------------- properties

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    traces=hnp.arrays(
        dtype=st.sampled_from([np.float64, np.float32, np.int16, np.uint8, np.dtype(">f8")]),
        shape=hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=6),
        elements={"allow_nan": True, "allow_infinity": True},
    ),
    fs=st.one_of(st.floats(min_value=1e-3, max_value=1e5), st.integers(1, 10**5)),
    metadata=st.dictionaries(st.text(max_size=6), _json_values, max_size=4),
)
def test_round_trip_property(tmp_path, traces, fs, metadata):
    calab.save_for_tuning(traces, fs, tmp_path / "p", metadata=metadata)
    loaded, meta = calab.load_tuning_data(tmp_path / "p")
    expected = np.ascontiguousarray(np.atleast_2d(traces), dtype="<f8")
    assert loaded.tobytes() == expected.tobytes()
    builtins = {"schema_version": "1.0.0", "sampling_rate_hz": fs, "num_cells": expected.shape[0],
                "num_timepoints": expected.shape[1], "dtype": "<f8"}
    assert meta == {**metadata, **builtins}
    assert type(meta["sampling_rate_hz"]) is type(fs)
