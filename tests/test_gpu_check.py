"""benchmarks/gpu_check.py runs end to end on the CPU (tiny sizes), so that it cannot rot between GPU runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run(tmp_path):
    """benchmarks/gpu_check.py end to end on the CPU, tiny sizes: so that it cannot rot before a GPU run."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny", "--out",
         str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    report = json.loads((tmp_path / "report.json").read_text())
    sections = report["sections"]
    assert list(sections) == ["env", "ops", "tests", "shapes", "train", "infer", "ddp"], done.stdout
    for name, row in sections.items():
        assert row["status"] in ("ok", "skipped"), f"{name}: {row}"
    # what can run on this CPU does run; only the sections that need torchvision's compiled kernels may skip
    for name in ("env", "tests", "shapes", "train", "ddp"):
        assert sections[name]["status"] == "ok", (name, sections[name])
    assert "| section | status |" in (tmp_path / "summary.md").read_text()
    assert done.returncode == 0, done.stdout + done.stderr
