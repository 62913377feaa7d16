"""The README's code cannot rot: every ```sh and ```python block runs, in order, against a
real stack (nats-server, central, a node) in a fresh folder, as a user would run it in a
second shell while ``cyxwiz up`` runs in the first.

A block that must not run (it blocks, needs other machines, or elides its input) has
``<!-- readme-test: skip (why) -->`` on the line before it; ``<!-- readme-test: write
FILE -->`` writes a block (a job file) into the folder first. A block of another
language that looks like a shell or Python, a marker that is not one of these, or a skip
without a reason fails the test. Each block gets ``$JOB``: a completed job trained on
builtin://digits, for blocks that go on from an earlier one.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from central.cli.stack import Stack, StackConfig
from central.client import Client

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUN_LANGS = {"sh", "python"}
OTHER_LANGS = {"", "toml", "yaml", "text"}  # never run: pictures, config, output
MARKER = re.compile(r"<!-- readme-test: (?P<verb>\S+)(?: (?P<arg>.*?))? -->")
FENCE = re.compile(r"^```(?P<lang>\S*)\s*$")


@dataclass(frozen=True)
class Block:
    line: int
    lang: str
    body: str
    verb: str  # run, skip or write
    arg: str = ""


def blocks(text: str) -> list[Block]:
    """Every fenced block of ``text`` with what its marker says (run when it has none)."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        before = MARKER.fullmatch(lines[i - 1].strip()) if i > 0 else None
        verb, arg = (before["verb"], before["arg"] or "") if before else ("run", "")
        found.append(Block(i + 1, fence["lang"], "\n".join(lines[i + 1:end]), verb, arg))
        i = end + 1
    return found


def test_every_block_is_run_or_marked():
    text = README.read_text()
    for match in MARKER.finditer(text):
        assert match["verb"] in ("skip", "write"), f"unknown README marker {match.group(0)}"
    every = blocks(text)
    for block in every:
        where = f"README.md:{block.line}"
        assert block.lang in RUN_LANGS | OTHER_LANGS, f"{where}: ```{block.lang} is neither run nor known"
        if block.verb == "skip":
            assert re.fullmatch(r"\(.+\)", block.arg), f"{where}: a skipped block says why, in parentheses"
        if block.verb == "write":
            assert block.arg and "/" not in block.arg, f"{where}: write names a file in the folder"
    marked = sum(1 for m in MARKER.finditer(text))
    assert marked == sum(1 for b in every if b.verb != "run"), "every marker is on the line before a block"
    assert sum(1 for b in every if b.lang in RUN_LANGS and b.verb == "run") >= 10


def run_block(command: list[str], *, cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """Run one block in a process group of its own; on timeout the whole group is killed
    (a block that starts a server leaves nothing behind)."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        raise AssertionError(f"a README block ran longer than {timeout:.0f} s:\n{command[-1]}\n{err[-2000:]}") from None
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # anything the block left running
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A folder with ``cyxwiz up``'s stack in ``./.cyxwiz`` (started from there, as a user
    would: its node's data root ``./data`` is this folder's)."""
    for name in [k for k in os.environ if k.startswith("CYXWIZ_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    config = StackConfig(home=tmp_path / ".cyxwiz", grpc_port=0, rest_port=0, nodes=1, node_port=0, deploy_port=0,
                         terminal_port=0, fresh_nats=True)
    with Stack(config) as stack:
        yield tmp_path, stack


@pytest.mark.timeout(1200)
def test_the_readme_runs(folder):
    work, stack = folder
    every = blocks(README.read_text())
    for block in every:
        if block.verb == "write":
            (work / block.arg).write_text(block.body + "\n")
    with Client(stack.grpc) as client:
        job = client.submit(dataset_uri="builtin://digits", model={"type": "mlp", "hidden": [32]}, epochs=2)
        assert client.wait(job).state == "completed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CYXWIZ_")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(ROOT), JOB=job)
    ran = 0
    for block in every:
        if block.lang not in RUN_LANGS or block.verb != "run":
            continue
        command = ["bash", "-c", "set -eo pipefail\n" + block.body] if block.lang == "sh" else [sys.executable, "-c", block.body]
        started = time.monotonic()
        done = run_block(command, cwd=work, env=env, timeout=400)
        print(f"README.md:{block.line} ({block.lang}) {time.monotonic() - started:.1f} s", flush=True)
        assert done.returncode == 0, (f"README.md:{block.line} ({block.lang}) exited {done.returncode}\n"
                                      f"{block.body}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")
        assert "Traceback" not in done.stderr, f"README.md:{block.line}: {done.stderr[-3000:]}"
        ran += 1
    assert ran == sum(1 for b in every if b.lang in RUN_LANGS and b.verb == "run")
