"""Loaders for CaImAn, Minian, suite2p and NWB output.

Every fixture is a real file written with the library the pipeline itself uses (h5py,
zarr, numpy, pynwb) in the layout that pipeline writes -- chunked and compressed where
the pipeline does so -- and the expected traces are the arrays that went in.
"""

from __future__ import annotations

import datetime
import json
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import pytest

import calab
from calab.loaders import detect_format, load_any

h5py = pytest.importorskip("h5py")
zarr = pytest.importorskip("zarr")

RNG = np.random.default_rng(11)
C = RNG.standard_normal((5, 120)).astype(np.float32)  # (cells, time), as the pipelines store it


# --------------------------------------------------------------------------- CaImAn
def write_caiman(path: pathlib.Path, traces=C, fr=15.0, **extra) -> pathlib.Path:
    """The layout of ``cnm.save()``: estimates/*, params/<group>/*, None as 'NoneType'."""
    with h5py.File(path, "w") as handle:
        est = handle.create_group("estimates")
        chunks = (1, 60) if np.ndim(traces) == 2 else True
        est.create_dataset("C", data=traces, chunks=chunks, compression="gzip", compression_opts=4, shuffle=True)
        est.create_dataset("S", data=np.abs(traces))
        est.create_dataset("YrA", data=traces * 0.1)
        est["F_dff"] = "NoneType"
        sparse = est.create_group("A")
        sparse.create_dataset("data", data=np.ones(3))
        sparse.create_dataset("indices", data=np.arange(3))
        sparse.create_dataset("indptr", data=np.array([0, 1, 2, 3]))
        sparse.create_dataset("shape", data=np.array([16, 3]))
        if fr is not None:
            handle.create_dataset("params/data/fr", data=np.float64(fr))
        handle.create_dataset("params/data/decay_time", data=0.4)
        handle.create_dataset("dims", data=np.array([4, 4]))
        for key, value in extra.items():
            handle.create_dataset(key, data=value)
    return path


def test_caiman_reads_traces_and_rate(tmp_path):
    traces, meta = calab.load_caiman(write_caiman(tmp_path / "caiman_results.hdf5"))
    assert traces.dtype == np.float64 and traces.flags.c_contiguous
    np.testing.assert_array_equal(traces, C.astype(np.float64))
    assert meta == {"source": "caiman", "sampling_rate_hz": 15.0, "num_cells": 5, "num_timepoints": 120}


def test_caiman_overrides_and_keys(tmp_path):
    path = write_caiman(tmp_path / "r.hdf5", custom_fr=np.float32(9.5))
    traces, meta = calab.load_caiman(path, trace_key="estimates/YrA", fs_key="custom_fr")
    np.testing.assert_array_equal(traces, (C * 0.1).astype(np.float64))
    assert meta["sampling_rate_hz"] == 9.5
    assert calab.load_caiman(path, fs=30.0)[1]["sampling_rate_hz"] == 30.0
    assert calab.load_caiman(path, fs_key="missing")[1]["sampling_rate_hz"] is None


def test_caiman_without_rate_and_1d(tmp_path):
    path = write_caiman(tmp_path / "r.hdf5", traces=C[0], fr=None)
    traces, meta = calab.load_caiman(path)
    assert traces.shape == (1, 120) and meta["sampling_rate_hz"] is None


def test_caiman_errors(tmp_path):
    path = write_caiman(tmp_path / "r.hdf5")
    with pytest.raises(FileNotFoundError, match="CaImAn HDF5 file not found"):
        calab.load_caiman(tmp_path / "missing.hdf5")
    listed = r"Trace key 'estimates/X' not found .*Available keys: \['dims', 'estimates', 'params'\]"
    with pytest.raises(KeyError, match=listed) as info:
        calab.load_caiman(path, trace_key="estimates/X")
    assert "estimates/C" in str(info.value)  # the dataset list names the right key
    with pytest.raises(ValueError, match="NoneType"):
        calab.load_caiman(path, trace_key="estimates/F_dff")
    with pytest.raises(ValueError, match="is a group"):
        calab.load_caiman(path, trace_key="estimates/A")
    (tmp_path / "corrupt.hdf5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        calab.load_caiman(tmp_path / "corrupt.hdf5")
    with pytest.raises(ValueError, match="> 0"):
        calab.load_caiman(path, fs=-1)


@pytest.mark.parametrize(
    "data, error, match",
    [(np.ones((2, 3, 4)), ValueError, "1D or 2D, got 3D"), (np.ones((2, 3)) * 1j, TypeError, "complex"),
     (np.array([b"ab", b"cd"]), TypeError, "non-numeric")],
)
def test_caiman_bad_arrays(tmp_path, data, error, match):
    path = write_caiman(tmp_path / "r.hdf5", bad=data)
    with pytest.raises(error, match=match):
        calab.load_caiman(path, trace_key="bad")


# --------------------------------------------------------------------------- Minian
def write_minian(root: pathlib.Path, traces=C, zarr_format=2, time_first=False) -> pathlib.Path:
    """``save_minian`` layout: <root>/C.zarr is an xarray dataset with C, unit_id, frame."""
    import numcodecs

    root.mkdir(exist_ok=True)
    data = traces.T if time_first else traces
    dims = ["frame", "unit_id"] if time_first else ["unit_id", "frame"]
    for name, values in (("C", data), ("S", np.abs(data))):
        group = zarr.open_group(str(root / f"{name}.zarr"), mode="w", zarr_format=zarr_format)
        kwargs = {"chunks": (values.shape[0], 50) if not time_first else (50, values.shape[1])}
        if zarr_format == 2:
            kwargs["compressors"] = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=1)
        else:
            kwargs["dimension_names"] = dims
        array = group.create_array(name, shape=values.shape, dtype=values.dtype, **kwargs)
        array[:] = values
        if zarr_format == 2:
            array.attrs["_ARRAY_DIMENSIONS"] = dims
        for coordinate, size in (("unit_id", traces.shape[0]), ("frame", traces.shape[1])):
            coord = group.create_array(coordinate, shape=(size,), dtype="i8")
            coord[:] = np.arange(size)
            if zarr_format == 2:
                coord.attrs["_ARRAY_DIMENSIONS"] = [coordinate]
        if zarr_format == 2:
            zarr.consolidate_metadata(str(root / f"{name}.zarr"), zarr_format=2)
    return root


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_minian_output_directory(tmp_path, zarr_format):
    traces, meta = calab.load_minian(write_minian(tmp_path / "minian_output", zarr_format=zarr_format), fs=30.0)
    np.testing.assert_array_equal(traces, C.astype(np.float64))
    assert meta == {"source": "minian", "sampling_rate_hz": 30.0, "num_cells": 5, "num_timepoints": 120}


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_minian_time_first_array_is_transposed(tmp_path, zarr_format):
    root = write_minian(tmp_path / "out", zarr_format=zarr_format, time_first=True)
    traces, _ = calab.load_minian(root)
    np.testing.assert_array_equal(traces, C.astype(np.float64))


def test_minian_dataset_path_and_flat_group(tmp_path):
    root = write_minian(tmp_path / "out")
    np.testing.assert_array_equal(calab.load_minian(root / "C.zarr")[0], C)
    flat = zarr.open_group(str(tmp_path / "flat"), mode="w")  # the layout the reference's tests use
    flat.create_array("C", shape=C.shape, dtype=C.dtype)[:] = C
    traces, meta = calab.load_minian(tmp_path / "flat")
    np.testing.assert_array_equal(traces, C)
    assert meta["sampling_rate_hz"] is None
    np.testing.assert_array_equal(calab.load_minian(root, trace_key="S")[0], np.abs(C))


def test_minian_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="Minian Zarr directory not found"):
        calab.load_minian(tmp_path / "nope")
    root = write_minian(tmp_path / "out")
    with pytest.raises(KeyError, match=r"Trace key 'YrA' not found .*Available keys: \['C.zarr', 'S.zarr'\]"):
        calab.load_minian(root, trace_key="YrA")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="not a Zarr store"):
        calab.load_minian(tmp_path / "plain")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        calab.load_minian(tmp_path / "file.txt")


def test_minian_corrupt_chunk_is_a_clear_error(tmp_path):
    root = write_minian(tmp_path / "out")
    chunk = next(p for p in (root / "C.zarr" / "C").iterdir() if not p.name.startswith("."))
    chunk.write_bytes(b"garbage that is not blosc")
    with pytest.raises(ValueError, match="Could not read Zarr array 'C'"):
        calab.load_minian(root)


def test_minian_3d_array_rejected(tmp_path):
    group = zarr.open_group(str(tmp_path / "cube"), mode="w")
    group.create_array("C", shape=(2, 3, 4), dtype="f4")[:] = 1
    with pytest.raises(ValueError, match="3D"):
        calab.load_minian(tmp_path / "cube")


# --------------------------------------------------------------------------- suite2p
def write_suite2p(plane: pathlib.Path, *, ops=True, iscell=True, fs=12.0, neucoeff=0.7) -> dict:
    plane.mkdir(parents=True)
    rng = np.random.default_rng(5)
    f = rng.random((6, 90)).astype(np.float32) * 100
    fneu = rng.random((6, 90)).astype(np.float32) * 20
    labels = np.array([[1, 0.9], [0, 0.2], [1, 0.7], [0, 0.45], [1, 0.99], [0, 0.05]], dtype=np.float64)
    np.save(plane / "F.npy", f)
    np.save(plane / "Fneu.npy", fneu)
    np.save(plane / "spks.npy", np.zeros_like(f))
    np.save(plane / "stat.npy", np.array([{"ypix": np.arange(3), "xpix": np.arange(3)}] * 6, dtype=object))
    if iscell:
        np.save(plane / "iscell.npy", labels)
    if ops:
        # suite2p's ops dict: numbers, arrays, strings, a datetime and a Path inside a pickle
        np.save(plane / "ops.npy", {"fs": fs, "neucoeff": neucoeff, "tau": 1.0, "nframes": 90,
                                    "meanImg": np.ones((4, 4), np.float32), "save_path": pathlib.Path(plane),
                                    "date_proc": datetime.datetime(2024, 5, 1, 12, 0), "nplanes": 1})
    return {"F": f, "Fneu": fneu, "iscell": labels}


def test_suite2p_defaults_subtract_neuropil_and_keep_cells(tmp_path):
    files = write_suite2p(tmp_path / "suite2p" / "plane0", neucoeff=0.8)
    traces, meta = calab.load_suite2p(tmp_path / "suite2p" / "plane0")
    keep = [0, 2, 4]
    expected = files["F"].astype(np.float64) - 0.8 * files["Fneu"].astype(np.float64)
    np.testing.assert_array_equal(traces, expected[keep])
    assert meta == {"source": "suite2p", "sampling_rate_hz": 12.0, "num_cells": 3, "num_timepoints": 90,
                    "roi_indices": keep, "neuropil_coefficient": 0.8}


def test_suite2p_options(tmp_path):
    files = write_suite2p(tmp_path / "suite2p" / "plane0")
    raw, meta = calab.load_suite2p(tmp_path / "suite2p", subtract_neuropil=False, cells_only=False, fs=20)
    np.testing.assert_array_equal(raw, files["F"])
    assert meta["sampling_rate_hz"] == 20.0 and meta["neuropil_coefficient"] is None
    assert meta["roi_indices"] == list(range(6))
    probable, meta = calab.load_suite2p(tmp_path / "suite2p/plane0/F.npy", cell_probability=0.4,
                                        neuropil_coefficient=0.5)
    assert meta["roi_indices"] == [0, 2, 3, 4] and meta["neuropil_coefficient"] == 0.5
    corrected = files["F"].astype(float) - 0.5 * files["Fneu"].astype(float)
    np.testing.assert_array_equal(probable, corrected[[0, 2, 3, 4]])


def test_suite2p_without_ops_or_iscell(tmp_path):
    write_suite2p(tmp_path / "plane0", ops=False, iscell=False)
    with pytest.warns(UserWarning, match="iscell.npy not found"):
        traces, meta = calab.load_suite2p(tmp_path / "plane0")
    assert traces.shape == (6, 90) and meta["sampling_rate_hz"] is None
    assert meta["neuropil_coefficient"] == 0.7  # suite2p's default


def test_suite2p_ops_pickle_is_not_executed(tmp_path):
    write_suite2p(tmp_path / "plane0")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (pathlib.Path.touch, (marker,))

    np.save(tmp_path / "plane0" / "ops.npy", np.array({"fs": 7.5, "payload": Exploit()}, dtype=object),
            allow_pickle=True)
    _, meta = calab.load_suite2p(tmp_path / "plane0")
    assert meta["sampling_rate_hz"] == 7.5
    assert not marker.exists()


def test_suite2p_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="suite2p folder not found"):
        calab.load_suite2p(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="F.npy not found"):
        calab.load_suite2p(tmp_path / "empty")
    write_suite2p(tmp_path / "s2p" / "plane0")
    write_suite2p(tmp_path / "s2p" / "plane1")
    with pytest.raises(ValueError, match=r"several suite2p planes \['plane0', 'plane1'\]"):
        calab.load_suite2p(tmp_path / "s2p")
    plane = tmp_path / "s2p" / "plane0"
    (plane / "Fneu.npy").unlink()
    with pytest.raises(FileNotFoundError, match="subtract_neuropil=False"):
        calab.load_suite2p(plane)
    np.save(plane / "iscell.npy", np.zeros((6, 2)))
    with pytest.raises(ValueError, match="No ROI .* is classified as a cell"):
        calab.load_suite2p(plane, subtract_neuropil=False)
    np.save(plane / "F.npy", np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="3D"):
        calab.load_suite2p(plane, subtract_neuropil=False, cells_only=False)
    (plane / "F.npy").write_bytes((plane / "F.npy").read_bytes()[:200])  # header intact, data cut
    with pytest.raises(ValueError, match="truncated"):
        calab.load_suite2p(plane, subtract_neuropil=False, cells_only=False)


# --------------------------------------------------------------------------- NWB
def write_nwb_h5(path: pathlib.Path, series: dict, *, nwb=True) -> pathlib.Path:
    """A minimal NWB 2 layout written with h5py only (no pynwb): what pynwb writes."""
    with h5py.File(path, "w") as handle:
        if nwb:
            handle.attrs["nwb_version"] = "2.7.0"
            handle.attrs["neurodata_type"] = "NWBFile"
            handle.attrs["namespace"] = "core"
        for name, spec in series.items():
            group = handle.create_group(name)
            group.attrs["neurodata_type"] = "RoiResponseSeries"
            group.attrs["namespace"] = "core"
            data = group.create_dataset("data", data=spec["data"], chunks=True, compression="gzip")
            data.attrs["unit"] = "a.u."
            data.attrs["conversion"] = spec.get("conversion", 1.0)
            data.attrs["offset"] = spec.get("offset", 0.0)
            if "rate" in spec:
                start = group.create_dataset("starting_time", data=0.0)
                start.attrs["rate"] = spec["rate"]
                start.attrs["unit"] = "seconds"
            if "timestamps" in spec:
                group.create_dataset("timestamps", data=spec["timestamps"])
            group.create_dataset("rois", data=np.arange(spec["data"].shape[-1]))
    return path


FLUO = "processing/ophys/Fluorescence/RoiResponseSeries"
DFF = "processing/ophys/DfOverF/RoiResponseSeries"


def test_nwb_h5_layout_transposes_time_first(tmp_path):
    path = write_nwb_h5(tmp_path / "s.nwb", {FLUO: {"data": C.T, "rate": 30.0}})
    traces, meta = calab.load_nwb(path)
    np.testing.assert_array_equal(traces, C.astype(np.float64))
    assert traces.flags.c_contiguous
    assert meta == {"source": "nwb", "sampling_rate_hz": 30.0, "num_cells": 5, "num_timepoints": 120,
                    "series": FLUO, "unit": "a.u."}


def test_nwb_series_selection_timestamps_and_scaling(tmp_path):
    stamps = np.arange(120) / 20.0 + 3.0
    path = write_nwb_h5(tmp_path / "s.nwb", {
        FLUO: {"data": C.T, "rate": 30.0},
        DFF: {"data": C.T, "timestamps": stamps, "conversion": 2.0, "offset": 1.0},
    })
    with pytest.raises(ValueError, match="several RoiResponseSeries"):
        calab.load_nwb(path)
    traces, meta = calab.load_nwb(path, series="DfOverF/RoiResponseSeries")
    np.testing.assert_allclose(traces, C.astype(np.float64) * 2.0 + 1.0)
    assert meta["sampling_rate_hz"] == pytest.approx(20.0) and meta["series"] == DFF
    assert calab.load_nwb(path, series=FLUO, fs=10)[1]["sampling_rate_hz"] == 10.0
    with pytest.raises(KeyError, match="Available keys"):
        calab.load_nwb(path, series="Deconvolved")


def test_nwb_single_roi_and_errors(tmp_path):
    path = write_nwb_h5(tmp_path / "one.nwb", {FLUO: {"data": C[0], "rate": 5.0}})
    assert calab.load_nwb(path)[0].shape == (1, 120)
    with pytest.raises(FileNotFoundError, match="NWB file not found"):
        calab.load_nwb(tmp_path / "missing.nwb")
    with pytest.raises(KeyError, match="No RoiResponseSeries"):
        calab.load_nwb(write_nwb_h5(tmp_path / "empty.nwb", {}))
    with pytest.raises(ValueError, match="not an NWB file"):
        calab.load_nwb(write_nwb_h5(tmp_path / "plain.h5", {FLUO: {"data": C.T}}, nwb=False))
    with pytest.raises(ValueError, match="3D"):
        calab.load_nwb(write_nwb_h5(tmp_path / "cube.nwb", {FLUO: {"data": np.ones((4, 3, 2))}}))
    (tmp_path / "junk.nwb").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable NWB"):
        calab.load_nwb(tmp_path / "junk.nwb")


def _pynwb_file(path: pathlib.Path, data: np.ndarray, rate: float | None = 30.0, timestamps=None):
    pynwb = pytest.importorskip("pynwb")
    with warnings.catch_warnings():
        # hdmf warns that the ROI table region is linked before the series has a parent
        warnings.simplefilter("ignore")
        _write_pynwb(pynwb, path, data, rate, timestamps)
    return pynwb


def _write_pynwb(pynwb, path, data, rate, timestamps):
    from pynwb.ophys import DfOverF, Fluorescence, ImageSegmentation, OpticalChannel, RoiResponseSeries

    nwb = pynwb.NWBFile(session_description="calab test", identifier="calab-test",
                        session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC))
    device = nwb.create_device(name="Microscope")
    channel = OpticalChannel(name="OpticalChannel", description="green", emission_lambda=520.0)
    plane = nwb.create_imaging_plane(name="ImagingPlane", optical_channel=channel, description="plane",
                                     device=device, excitation_lambda=920.0, indicator="GCaMP6f",
                                     location="V1", imaging_rate=30.0)
    module = nwb.create_processing_module(name="ophys", description="optical physiology")
    segmentation = ImageSegmentation()
    module.add(segmentation)
    rois = segmentation.create_plane_segmentation(name="PlaneSegmentation", description="rois",
                                                  imaging_plane=plane)
    for index in range(data.shape[1]):
        mask = np.zeros((8, 8))
        mask[index % 8, index // 8] = 1
        rois.add_roi(image_mask=mask)
    region = rois.create_roi_table_region(region=list(range(data.shape[1])), description="all")
    timing = {"rate": rate, "starting_time": 0.0} if timestamps is None else {"timestamps": timestamps}
    module.add(Fluorescence(roi_response_series=RoiResponseSeries(
        name="RoiResponseSeries", data=data, rois=region, unit="lumens", **timing)))
    module.add(DfOverF(roi_response_series=RoiResponseSeries(
        name="RoiResponseSeries", data=data / 10, rois=region, unit="n.a.", **timing)))
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


def test_nwb_written_by_pynwb(tmp_path):
    _pynwb_file(tmp_path / "session.nwb", C.T.copy())
    traces, meta = calab.load_nwb(tmp_path / "session.nwb", series="Fluorescence/RoiResponseSeries")
    np.testing.assert_array_equal(traces, C.astype(np.float64))
    assert meta["sampling_rate_hz"] == 30.0 and meta["unit"] == "lumens"
    dff, _ = calab.load_nwb(tmp_path / "session.nwb", series="DfOverF/RoiResponseSeries")
    np.testing.assert_array_equal(dff, (C / 10).astype(np.float64))
    assert detect_format(tmp_path / "session.nwb") == "nwb"


def test_nwb_open_pynwb_object(tmp_path):
    stamps = np.arange(120) / 25.0
    pynwb = _pynwb_file(tmp_path / "session.nwb", C.T.copy(), timestamps=stamps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pynwb.NWBHDF5IO(str(tmp_path / "session.nwb"), "r") as io:
            nwbfile = io.read()
            traces, meta = calab.load_nwb(nwbfile, series="Fluorescence/RoiResponseSeries")
    np.testing.assert_array_equal(traces, C.astype(np.float64))
    assert meta["sampling_rate_hz"] == pytest.approx(25.0)


# --------------------------------------------------------------------------- shared behaviour
def test_detect_format_and_load_any(tmp_path):
    write_caiman(tmp_path / "a.hdf5")
    write_minian(tmp_path / "m")
    write_suite2p(tmp_path / "suite2p" / "plane0")
    write_nwb_h5(tmp_path / "n.h5", {FLUO: {"data": C.T, "rate": 30.0}})
    assert detect_format(tmp_path / "a.hdf5") == "caiman"
    assert detect_format(tmp_path / "m") == "minian"
    assert detect_format(tmp_path / "m" / "C.zarr") == "minian"
    assert detect_format(tmp_path / "suite2p") == "suite2p"
    assert detect_format(tmp_path / "n.h5") == "nwb"
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(ValueError, match="Choose the format explicitly"):
        detect_format(tmp_path / "x.csv")
    with pytest.raises(FileNotFoundError):
        detect_format(tmp_path / "missing")
    assert load_any(tmp_path / "a.hdf5", key="estimates/S")[0].min() >= 0
    assert load_any(tmp_path / "m", "minian", fs=3.0)[1]["sampling_rate_hz"] == 3.0


def test_loader_output_round_trips_through_save_for_tuning(tmp_path):
    traces, meta = calab.load_caiman(write_caiman(tmp_path / "r.hdf5"))
    calab.save_for_tuning(traces, meta["sampling_rate_hz"], tmp_path / "rec", metadata=meta)
    loaded, sidecar = calab.load_tuning_data(tmp_path / "rec")
    assert loaded.tobytes() == traces.tobytes()
    assert {k: sidecar[k] for k in meta} == meta


def test_missing_optional_dependency_names_the_fix(tmp_path):
    write_caiman(tmp_path / "r.hdf5")
    write_minian(tmp_path / "m")
    code = f"""
import sys
sys.modules['h5py'] = None; sys.modules['zarr'] = None   # make both imports fail
import calab
for call in (lambda: calab.load_caiman({str(tmp_path / 'r.hdf5')!r}),
             lambda: calab.load_minian({str(tmp_path / 'm')!r}),
             lambda: calab.load_nwb({str(tmp_path / 'r.hdf5')!r})):
    try:
        call()
    except ImportError as exc:
        print(type(exc).__name__, exc, exc.__suppress_context__)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert lines == [
        "ImportError h5py is required to load CaImAn files. Install it with: pip install calab[loaders] True",
        "ImportError zarr is required to load Minian files. Install it with: pip install calab[loaders] True",
        "ImportError h5py is required to load NWB files. Install it with: pip install calab[loaders] True",
    ]


def test_metadata_is_json_serialisable(tmp_path):
    write_suite2p(tmp_path / "plane0")
    _, meta = calab.load_suite2p(tmp_path / "plane0")
    json.dumps(meta)
