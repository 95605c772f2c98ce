"""`make demo` is the README's first command: it must keep working."""

import subprocess
import sys

from conftest import ROOT


def test_demo_runs_both_scenes(pyz):
    # The demo bounds each scene itself (20 s, then it names and kills what still runs),
    # so a hang shows up as a failed scene with its timeline, not as this timeout.
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py")],
                            capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "scene 1: OK" in result.stdout and "scene 2: OK" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines()]
    assert ["worker", "killed"] in [row[:2] for row in rows], result.stdout
    assert ["job", "dead", "1"] in [row[:3] for row in rows], result.stdout  # one restart
    assert "job exited with 1: restarting it (restartPolicy OnFailure)" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
