"""Shared measuring protocol of the benchmark scripts.

The machines these benchmarks run on are shared and noisy: the same case can take 3× longer an hour
later. So every script reports its figures next to (or as ratios against) an fp32 matmul probe
measured in the same run, runs each case in a fresh subprocess so that its peak resident set size is
its own, records the machine and load it ran on, and, to compare against an older version of the
code, measures that version in the same run instead of quoting an old figure. One copy of each piece
keeps those rules identical across the scripts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import statistics
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from stereo.evaluation.reports import machine_info  # noqa: F401  (the benchmarks' machine record)

REPO_ROOT = Path(__file__).resolve().parents[1]


def matmul_gflops(device: str = "cpu", size: int = 2048, repeats: int = 5) -> float:
    """Median fp32 GFLOP/s of ``repeats`` size×size products: the compute this process gets right now."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)

    def product() -> float:
        start = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()  # kernels are asynchronous: time the work, not the launch
        return time.perf_counter() - start

    product()  # first call: thread pool and kernel set-up
    return statistics.median(2 * size**3 / product() / 1e9 for _ in range(repeats))


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (``ru_maxrss``; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_json(command: list[str], env: dict[str, str] | None = None, timeout: float | None = None) -> dict:
    """Run ``command`` and return the JSON object on its last stdout line.

    Failures come back as ``{"error": ...}`` (the stderr tail, whose last line is the exception) so
    that one failing case does not lose the rest of a long benchmark run.
    """
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": done.stderr.strip()[-2000:] or f"exit status {done.returncode}, no output"}
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": f"last stdout line is not JSON: {lines[-1][:200]}"}


@contextlib.contextmanager
def baseline_tree(rev: str) -> Iterator[Path]:
    """The repository as of git revision ``rev``, exported to a temporary directory (removed afterwards)."""
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", rev], stdout=subprocess.PIPE, check=True).stdout
    with tempfile.TemporaryDirectory(prefix=f"stereo-{rev}-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp)


def tree_env(tree: Path) -> dict[str, str]:
    """This environment with ``tree`` first on PYTHONPATH, so a child's ``import stereo`` is that tree's.

    PYTHONPATH precedes site-packages, where the editable install points at this checkout; the old
    package then finds its own ``conf/`` beside it (stereo.config looks next to the package). Run the
    child as a script file: ``python -c``/``-m`` would put the working directory (perhaps this
    checkout) ahead of PYTHONPATH.
    """
    paths = [str(tree), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
