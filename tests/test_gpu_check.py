"""bench/gpu_check.py's verdict: it fails (exit 1, the reason in its last line and its JSON) on
a case's error, numerics outside tolerance or a retraced step, and passes otherwise. The cases
themselves need a GPU; here `GpuCheck.run` returns made-up results (the no-GPU path is in
tests/test_cli.py)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clean_results() -> dict:
    return {
        "gpu": "a test double",
        "cases": {
            "numerics float32 vs NumPy core": {"loss_relative_error": 2e-5, "gradient_error_of_scale": 3e-3},
            "train thesis 64 float32": {"s_per_step": 0.01, "images_per_s": 1e4, "traces": 1, "peak_gpu_mib": 900.0, "batch": 100},
            "generate png in process": {"images": 10, "seconds": 1.0, "images_per_s": 10.0, "peak_gpu_mib": None, "format": "png"},
        },
        "skipped": ["generate png on Ray"],  # the time limit came first: reported, not a failure
        "ratios": {"fused / thesis recipe (target >= 2)": 1.2},  # a missed speed target: reported, not a failure
    }


def test_the_tolerances_hold_at_their_limits_and_a_nan_is_outside(gpu_check):
    limit_loss, limit_gradient = gpu_check.LOSS_TOLERANCE, gpu_check.GRADIENT_TOLERANCE
    assert gpu_check.within_tolerance(limit_loss, limit_gradient)
    assert not gpu_check.within_tolerance(limit_loss * 1.01, 0.0)
    assert not gpu_check.within_tolerance(0.0, limit_gradient * 1.01)
    assert not gpu_check.within_tolerance(math.nan, 0.0) and not gpu_check.within_tolerance(0.0, math.nan)


@pytest.mark.parametrize(
    "case, change, reason",
    [
        ("numerics float32 vs NumPy core", {"gradient_error_of_scale": 0.05}, "outside tolerance"),
        ("numerics float32 vs NumPy core", {"loss_relative_error": math.nan}, "outside tolerance"),
        ("train thesis 64 float32", {"traces": 2}, "traced 2 times"),
        ("generate png in process", {"error": "ResourceExhaustedError: OOM"}, "ResourceExhaustedError: OOM"),
    ],
    ids=["gradients", "nan-loss", "retraced", "error"],
)
def test_a_failed_case_fails_the_check_with_its_reason_in_one_line(gpu_check, monkeypatch, tmp_path, capsys, case, change, reason):
    results = clean_results()
    results["cases"][case] = {**results["cases"][case], **change}
    if "error" in change:
        results["cases"][case] = change
    monkeypatch.setattr(gpu_check.GpuCheck, "run", lambda self: results)
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--on-cpu", "--out", str(out)]) == 1
    last = capsys.readouterr().out.rstrip("\n").splitlines()[-1]
    assert last.startswith("gpu check FAILED:") and case in last and reason in last
    written = json.loads(out.read_text())
    assert len(written["problems"]) == 1 and reason in written["problems"][0]


def test_a_clean_run_passes_whatever_was_skipped_or_slow(gpu_check, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(gpu_check.GpuCheck, "run", lambda self: clean_results())
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--on-cpu", "--out", str(out)]) == 0
    assert "FAILED" not in capsys.readouterr().out
    assert json.loads(out.read_text())["problems"] == []
