"""The fuzz run in CI's size: a few hundred seeded mutations of every input kind (``scripts/fuzz.py``).

The documented run (``python scripts/fuzz.py --cases 5000``, ``docs/reliability.md``) uses
the same code with more cases. Invariant: no traceback, no hang over 10 s, no crash, a
one-line refusal for what cannot be used, and ``mtcnn-jax detect`` over the mutated
images reports each bad file once and still processes the intact ones.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _fuzz_module():
    spec = importlib.util.spec_from_file_location("mtcnn_fuzz", REPO / "scripts" / "fuzz.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mutations_are_seeded_and_reach_every_kind():
    fuzz = _fuzz_module()
    import random

    base = fuzz.seeds()
    assert set(base) == set(fuzz.KINDS)
    a = fuzz.mutate(base["png"], random.Random("0/7"))
    b = fuzz.mutate(base["png"], random.Random("0/7"))
    assert a == b and a[0] != base["png"]


@pytest.mark.slow
def test_three_hundred_mutated_inputs_break_no_invariant(tmp_path):
    fuzz = _fuzz_module()
    summary = fuzz.fuzz(cases=330, seed=2026, workdir=tmp_path)
    assert summary["cases"] == 330
    assert summary["broken"] == [], summary["broken"][:5]
    assert summary["cli"]["problems"] == [], summary["cli"]["problems"][:5]
    # every kind was exercised and most mutations were refused (not silently accepted)
    assert set(summary["by_kind"]) == set(fuzz.KINDS)
    refused = sum(c.get("refused", 0) for c in summary["by_kind"].values())
    assert refused > 0.5 * summary["cases"]
    assert summary["slowest"]["seconds"] < 10
