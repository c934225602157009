"""The words a new user reads first: the README's set-up and Use sections, and the
docstrings of the automated path say in plain words what comes back and where."""

from __future__ import annotations

import pydoc
import re
from pathlib import Path

import calab

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
JARGON = ("InDeCa outer loop", "spec §", "PVE", "spec indeca")


def _section(title: str) -> str:
    match = re.search(rf"^## {title}\n(.*?)(?=^## )", README, re.MULTILINE | re.DOTALL)
    assert match, title
    return match.group(1)


def test_readme_set_up_is_two_commands():
    blocks = re.findall(r"```bash\n(.*?)```", _section("Set up"), re.DOTALL)
    assert [block.strip() for block in blocks] == [
        'python -m pip install -e . && calab demo',
        'python -m pip install -e ".[test]" && python -m pytest',
    ]


def test_readme_use_starts_with_run_cadecon_then_the_lambda_rule():
    use = _section("Use")
    first = re.search(r"```python\n(.*?)```", use, re.DOTALL).group(1)
    assert "calab.load_suite2p" in first and "calab.load_caiman" in first
    assert "calab.run_cadecon(traces, fs)" in first and 'result.metadata["tau_rise"]' in first
    assert use.index("run_cadecon") < use.index("run_deconvolution")
    assert "lam = calab.noise_sd(traces)" in use and "noise SD" in use


def test_every_decon_config_field_is_described_in_help_and_the_schema():
    text = pydoc.render_doc(calab.DeconConfig, renderer=pydoc.plaintext)
    schema = calab.DeconConfig.model_json_schema()["properties"]
    for name, field in calab.DeconConfig.model_fields.items():
        assert field.description, name
        assert schema[name].get("description") == field.description
        words = field.description.split()[:4]
        assert re.search(rf"{name} : .*\n[\s|]+{re.escape(' '.join(words))}", text), name


def test_the_automated_path_says_what_comes_back_and_where():
    for documented in (calab.run_cadecon, calab.CaDeconResult, calab.DeconConfig, calab.tune):
        text = documented.__doc__
        assert not [word for word in JARGON if word in text], documented
    for documented in (calab.run_cadecon, calab.CaDeconResult):
        assert 'metadata["tau_rise"]' in documented.__doc__ and 'metadata["warnings"]' in documented.__doc__
    assert "noise_sd" in calab.run_deconvolution.__doc__
