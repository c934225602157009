"""The command line against bad settings: one ``Error:`` line, exit 1, never a traceback.

Each case was a traceback, pydantic's multi-line message, or a silent default before.
"""

from __future__ import annotations

import numpy as np
import pytest

import calab
from calab import cli


@pytest.fixture
def recording(tmp_path):
    rng = np.random.default_rng(0)
    calab.save_for_tuning(rng.normal(size=(4, 120)) + 10.0, 30.0, tmp_path / "rec")
    return tmp_path / "rec"


def _one_error_line(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.mark.parametrize("flag, value, fragments", [
    ("--max-iterations", "500", ("invalid setting max_iterations", "200", "(got 500)")),
    ("--max-iterations", "0", ("invalid setting max_iterations", "greater than 0", "(got 0)")),
    ("--num-subsets", "0", ("invalid setting num_subsets", "greater than 0")),
    ("--num-subsets", "-3", ("invalid setting num_subsets", "(got -3)")),
])
def test_cadecon_native_out_of_range_setting_is_one_line(recording, capsys, flag, value, fragments):
    # Before: pydantic's four-line message after the run's header line.
    assert cli.main(["cadecon", str(recording), "--native", flag, value]) == 1
    _one_error_line(capsys, *fragments)


def test_cadecon_out_chunk_cells_zero_is_refused_like_deconvolve(recording, tmp_path, capsys):
    # Before: --chunk-cells 0 on cadecon --out silently meant "choose for me".
    export = tmp_path / "export.json"
    export.write_text('{"schema_version": "1.2.0", "parameters": {"tau_rise_s": 0.1, "tau_decay_s": 0.6, '
                      '"lambda": 0.5, "sampling_rate_hz": 30.0, "filter_enabled": false}}')
    assert cli.main(["deconvolve", f"{recording}.npy", "-p", str(export), "--out", str(tmp_path / "d.zarr"),
                     "--chunk-cells", "0"]) == 1
    refused = _one_error_line(capsys, "chunk_cells must be a positive number of cells, got 0")
    assert cli.main(["cadecon", str(recording), "--native", "--out", str(tmp_path / "c.zarr"),
                     "--chunk-cells", "0"]) == 1
    assert _one_error_line(capsys) == refused
    assert not (tmp_path / "c.zarr").exists()


def test_cadecon_out_sample_cells_zero_is_refused(recording, tmp_path, capsys):
    # Before: --sample-cells 0 silently meant the default of 1000.
    assert cli.main(["cadecon", str(recording), "--native", "--out", str(tmp_path / "c.zarr"),
                     "--sample-cells", "0"]) == 1
    _one_error_line(capsys, "sample_cells must be >= 1, got 0")
    assert not (tmp_path / "c.zarr").exists()


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
@pytest.mark.parametrize("command", ["tune", "cadecon"])
def test_a_port_out_of_range_is_one_line(recording, capsys, command, port):
    # Before: OverflowError from socket.bind, with a traceback.
    assert cli.main([command, str(recording), "--no-browser", "--port", port]) == 1
    _one_error_line(capsys, f"port must be an integer from 0 to 65535 (0 or None: any free port), got {port}")


def test_the_library_refuses_the_port_too():
    with pytest.raises(ValueError, match="port must be an integer from 0 to 65535"):
        calab.tune(np.ones((2, 50)), 30.0, port=70000, open_browser=False, timeout=0.1)
    with pytest.raises(TypeError, match="port must be an integer"):
        calab.tune(np.ones((2, 50)), 30.0, port="8080", open_browser=False, timeout=0.1)
