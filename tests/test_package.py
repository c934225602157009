"""The ``calab`` namespace and the module paths kept from calab 0.3.0."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import numpy as np

import calab


def test_dir_lists_the_public_api_and_nothing_of_the_implementation():
    # A fresh interpreter: only what `import calab` itself leaves behind.
    code = "import calab, json; print(json.dumps(dir(calab)))"
    names = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    extra = [name for name in names if not name.startswith("__") and name not in calab.__all__]
    assert extra == []
    assert set(calab.__all__) <= set(names) and "__version__" in names
    for helper in ("Any", "annotations", "importlib"):
        assert helper not in names


def test_dir_after_use_adds_only_submodules():
    calab.run_deconvolution  # noqa: B018 - resolves a lazy name, importing submodules
    extra = [name for name in dir(calab) if not name.startswith("__") and name not in calab.__all__]
    assert extra and all(isinstance(getattr(calab, name), types.ModuleType) for name in extra)


def test_every_public_name_resolves():
    for name in calab.__all__:
        if name in ("tune", "decon", "HeadlessBrowser", "BridgeVersionError", "BridgeVersionWarning"):
            continue  # the bridge: covered by the bridge tests
        assert getattr(calab, name) is not None, name


def test_io_at_the_0_3_0_module_path(tmp_path):
    from calab._io import deconvolve_from_export, load_export_params, load_tuning_data, save_for_tuning

    assert deconvolve_from_export is calab.deconvolve_from_export
    assert load_export_params is calab.load_export_params
    export = {"parameters": {"tau_rise_s": 0.1, "tau_decay_s": 0.6, "lambda": 0.5, "sampling_rate_hz": 30.0,
                             "filter_enabled": False},
              "schema_version": "1.1.0"}
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    params = load_export_params(path)
    assert params == {"tau_rise": 0.1, "tau_decay": 0.6, "lambda_": 0.5, "fs": 30.0, "filter_enabled": False}
    traces = np.random.default_rng(0).standard_normal((2, 300)).cumsum(axis=1)
    save_for_tuning(traces, 30.0, tmp_path / "rec")
    loaded, meta = load_tuning_data(tmp_path / "rec")
    np.testing.assert_array_equal(loaded, traces)
    expected = calab.run_deconvolution(traces, 30.0, 0.1, 0.6, 0.5)
    np.testing.assert_array_equal(deconvolve_from_export(traces, path), expected)
