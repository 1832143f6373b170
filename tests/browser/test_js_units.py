"""Runs the JavaScript unit tests of the static UI modules (tests/browser/*.test.mjs) with node --test."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

BROWSER_TESTS = Path(__file__).resolve().parent
REPO_ROOT = BROWSER_TESTS.parent.parent
MIN_NODE_MAJOR = 20


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            f"node (>= {MIN_NODE_MAJOR}) is required to run the UI unit tests in tests/browser/ "
            "but was not found on PATH. Install Node.js (e.g. `apt-get install nodejs` or from nodejs.org).",
            pytrace=False,
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    major = int(version.lstrip("v").split(".")[0])
    if major < MIN_NODE_MAJOR:
        pytest.fail(f"node {version} is too old for tests/browser/ (need >= {MIN_NODE_MAJOR})", pytrace=False)
    return node


def _tap_count(output: str, name: str) -> int:
    match = re.search(rf"^# {name} (\d+)$", output, re.MULTILINE)
    assert match, f"no '# {name}' line in node's TAP output:\n{output[-3000:]}"
    return int(match.group(1))


def test_node_unit_tests_pass() -> None:
    node = _node()
    test_files = sorted(str(path) for path in BROWSER_TESTS.glob("*.test.mjs"))
    assert len(test_files) >= 4, f"expected the sse/wav/player/api test files, found {test_files}"
    result = subprocess.run(
        [node, "--test", "--test-reporter=tap", *test_files],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"node --test failed (exit {result.returncode}):\n{output[-6000:]}"
    total = _tap_count(output, "tests")
    assert _tap_count(output, "fail") == 0, output[-6000:]
    assert _tap_count(output, "pass") == total
    assert total >= 30, f"only {total} JS tests ran; some test files were not picked up:\n{output[-3000:]}"
