"""Likely mistakes are caught with the fix in the message: a transposed array, time
constants in milliseconds, a misspelt setting.  The library warns (the call still runs, as
the published package would); the command line refuses (tests/test_cli_first_use.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pydantic
import pytest

import calab
from calab._validate import (
    SuspiciousInputWarning,
    millisecond_taus_message,
    transposed_message,
    unknown_names_message,
)
from calab.cadecon import CaDeconControl


def _no_suspicion(call):
    with warnings.catch_warnings():
        warnings.simplefilter("error", SuspiciousInputWarning)
        return call()


# --------------------------------------------------------------------------- transposed arrays
def test_far_more_cells_than_frames_looks_transposed():
    message = transposed_message((3000, 20))
    assert "3000 cells of only 20 frames" in message and "pass traces.T" in message
    assert transposed_message((20, 3000)) is None
    assert transposed_message((80, 20)) is None  # 4x: a short recording of many cells passes
    assert transposed_message((81, 20)) is not None
    assert transposed_message((5,)) is None and transposed_message((10, 0)) is None


def test_run_deconvolution_warns_about_a_transposed_array_and_still_runs():
    rng = np.random.default_rng(0)
    frames_by_cells = rng.standard_normal((300, 12))  # 12 cells of 300 frames, stored the wrong way round
    with pytest.warns(SuspiciousInputWarning, match=r"\(300, 12\).*pass traces\.T") as caught:
        activity = calab.run_deconvolution(frames_by_cells, 30.0, 0.1, 0.6, 0.1, backend="numpy")
    assert activity.shape == (300, 12)  # nothing altered: the caller's array, as given
    assert caught[0].filename == __file__  # points at the caller's line
    _no_suspicion(lambda: calab.run_deconvolution(frames_by_cells.T, 30.0, 0.1, 0.6, 0.1, backend="numpy"))
    _no_suspicion(lambda: calab.run_deconvolution(frames_by_cells[:, 0], 30.0, 0.1, 0.6, 0.1, backend="numpy"))


def test_run_cadecon_and_tune_warn_about_a_transposed_array():
    rng = np.random.default_rng(1)
    control = CaDeconControl()
    control.stop(finalize=False)  # the warning comes before any work; no need to run the loop
    with pytest.warns(SuspiciousInputWarning, match="pass traces.T"):
        calab.run_cadecon(rng.standard_normal((200, 40)), 30.0, control=control, progress=False)
    with pytest.warns(SuspiciousInputWarning, match="pass traces.T"):
        assert calab.tune(rng.standard_normal((200, 40)), 30.0, timeout=0.01, open_browser=False) is None


def test_deconvolve_dataset_warns_about_a_transposed_array(tmp_path):
    rng = np.random.default_rng(2)
    with pytest.warns(SuspiciousInputWarning, match="store it with cells as rows"):
        calab.deconvolve_dataset(rng.standard_normal((90, 20)), tmp_path / "out.zarr", fs=30.0,
                                 tau_r=0.1, tau_d=0.6, lam=0.1, progress=False)


# --------------------------------------------------------------------------- milliseconds
@pytest.mark.parametrize("taus", [(100, 600), (2, 400), (0.1, 600)])
def test_time_constants_in_milliseconds_are_recognised(taus):
    message = millisecond_taus_message(*taus)
    assert "look like milliseconds" in message
    assert f"tau_rise={taus[0] / 1000:g}" in message and f"tau_decay={taus[1] / 1000:g}" in message


@pytest.mark.parametrize("taus", [(0.1, 0.6), (0.005, 0.05), (0.5, 4.0), (0.9, 19.0)])
def test_time_constants_of_real_indicators_pass(taus):
    assert millisecond_taus_message(*taus) is None


def test_millisecond_taus_warn_in_every_entry_point(tmp_path):
    trace = np.random.default_rng(3).standard_normal(400)
    # fs = 1 Hz keeps the (wrong) 10 s decay kernel short so the test stays quick
    with pytest.warns(SuspiciousInputWarning, match="tau_r=0.002, tau_d=0.01"):
        calab.run_deconvolution(trace, 1.0, 2.0, 10.0, 0.1, backend="numpy")
    with pytest.warns(SuspiciousInputWarning, match="look like milliseconds"):
        calab.run_deconvolution_full(trace, 1.0, 2.0, 10.0, 0.1, backend="numpy")
    with pytest.warns(SuspiciousInputWarning, match="look like milliseconds"):
        calab.deconvolve_dataset(trace[None, :], tmp_path / "a.zarr", fs=1.0, tau_r=2.0, tau_d=10.0, lam=0.1,
                                 progress=False)
    control = CaDeconControl()
    control.stop(finalize=False)
    with pytest.warns(SuspiciousInputWarning, match="tau_rise=0.1, tau_decay=0.6"):
        calab.run_cadecon(np.tile(trace, (3, 1)), 30.0, tau_rise=100, tau_decay=600, control=control, progress=False)


# --------------------------------------------------------------------------- misspelt settings
def test_a_misspelt_setting_names_the_closest_one():
    with pytest.raises(pydantic.ValidationError) as raised:
        calab.DeconConfig(max_iteration=3)
    text = str(raised.value)
    assert "unknown DeconConfig setting 'max_iteration': did you mean 'max_iterations'?" in text
    assert "Extra inputs are not permitted" not in text
    # the same through run_cadecon's keyword overrides, before any work
    with pytest.raises(pydantic.ValidationError, match="did you mean 'num_subsets'"):
        calab.run_cadecon(np.ones((2, 50)), 30.0, num_subset=4)
    with pytest.raises(pydantic.ValidationError, match="did you mean 'hp_filter_enabled'"):
        calab.DeconConfig.model_validate({"hp_filter_enable": True})


def test_a_name_with_no_close_match_lists_the_valid_ones():
    message = unknown_names_message(["banana"], ["max_iterations", "seed"], "setting")
    assert message == "unknown setting 'banana': valid settings are max_iterations, seed"
    assert unknown_names_message(["seed"], ["seed"]) is None
    two = unknown_names_message(["sed", "max_iteration"], ["seed", "max_iterations"])
    assert "'sed': did you mean 'seed'?" in two and "'max_iteration': did you mean 'max_iterations'?" in two


def test_valid_settings_are_untouched():
    config = calab.DeconConfig(max_iterations=3, seed=7)
    assert (config.max_iterations, config.seed) == (3, 7)
