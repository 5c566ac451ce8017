"""The README's real-model example runs as a new user would paste it."""

from __future__ import annotations

import pathlib
import re

import pytest

import hybridcheck as hc
from hybridcheck import compat

README = pathlib.Path(__file__).parents[1] / "README.md"


@pytest.mark.skipif(not compat.HAS_BRIDGE, reason="the example uses nnx.bridge (0.9+)")
def test_real_model_example_passes_every_invariant(tmp_path, monkeypatch):
    text = README.read_text().split("## Verify your own hybrid model", 1)[1]
    (code,) = re.findall(
        r"```python\n(.*?)```", text.split("### The functional", 1)[0], re.S
    )
    if compat.FLAX_VERSION < (0, 11, 0):  # the example uses optimizer.update(model, g)
        code = code.replace("optimizer.update(model, grads)", "optimizer.update(grads)")
    path = tmp_path / "hybrid_case.py"
    path.write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict[str, object] = {}
    exec(compile(code, str(path), "exec"), namespace)  # noqa: S102 - the README's code
    report = hc.verify(namespace["CASE"], profile="dev")  # type: ignore[arg-type]
    assert report.ok, report.table()
