"""``benchmarks/rerun_defaults.sh`` names scripts that exist and blocks that the README has:
a renamed block or script would otherwise be skipped (or fail) hours into a re-run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "rerun_defaults.sh"
README = ROOT / "benchmarks" / "README.md"


def _commands() -> list[list[str]]:
    """The script's ``python $B/<bench>.py ...`` and ``$SEEDS ...`` commands, as argv lists
    (line continuations joined, the shell variables expanded to their script names)."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("run "):
            continue
        argv = shlex.split(line)[2:]  # drop "run NAME"
        if argv[0] == "$SEEDS":
            argv = ["python", "$B/bench_optim_seeds.py", *argv[1:]]
        out.append(argv)
    return out


def _block_markers(argv: list[str]) -> str | None:
    """The README block a command's ``--block`` writes (``None`` without one)."""
    if "--block" not in argv:
        return None
    name = argv[argv.index("--block") + 1]
    return f"nn-real-{name}" if argv[1].endswith("bench_nn_real.py") else name


def test_the_rerun_script_names_existing_scripts_and_blocks():
    commands = _commands()
    assert len(commands) >= 20, "the script's commands were not found"
    readme = README.read_text()
    blocks = set()
    for argv in commands:
        assert argv[0] == "python", argv
        script = ROOT / argv[1].replace("$B", "benchmarks")
        assert script.is_file(), f"{argv[1]}: no such benchmark"
        block = _block_markers(argv)
        if block is not None:
            assert f"<!-- {block}:start -->" in readme, f"{block}: no such README block"
            blocks.add(block)
    # every seed block of the README that compares an option of the defaults is re-run
    seed_blocks = set(re.findall(r"<!-- (optim-[a-z0-9-]+):start -->", readme))
    written_by_default = {"optim-seeds", "optim-peers", "optim-quality", "optim-step"}
    written_by_default |= {"optim-batched"}
    assert seed_blocks - written_by_default <= blocks, sorted(seed_blocks - blocks)


def test_retired_blocks_have_no_markers_and_are_not_rerun():
    """benchmarks/HISTORY.md holds blocks measured against older defaults: a marker there would
    let a script rewrite one with today's defaults under the old prose, and a rerun command for
    one of its blocks would find no marker hours into ``rerun_defaults.sh``."""
    history = (ROOT / "benchmarks" / "HISTORY.md").read_text()
    assert "<!--" not in history
    retired = set(re.findall(r"--block ([a-z0-9-]+)", history))
    assert {"optim-cbeta", "optim-squarings"} <= retired, sorted(retired)
    rerun = {_block_markers(argv) for argv in _commands()}
    assert not retired & rerun, sorted(retired & rerun)
    readme = README.read_text()
    assert not [b for b in retired if f"<!-- {b}:start -->" in readme]


def _write_many(path: str, name: str, times: int) -> None:
    """Write block ``name`` ``times`` times, checking (under the lock) before each write that
    the previous one is still there: a writer that wrote back a stale read would have
    reverted it. Reads are slowed down to widen the window between read and write."""
    import sys
    import time

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import _readme

    read = Path.read_text

    def slow_read(self: Path, *args, **kwargs) -> str:
        text = read(self, *args, **kwargs)
        time.sleep(0.002)
        return text

    Path.read_text = slow_read  # this child process only
    target = Path(path)
    for i in range(times):
        with _readme._locked(target):
            text = read(target)
        if i and f"{name} {i - 1}\n" not in text:
            raise SystemExit(f"block {name}: write {i - 1} lost")
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        _readme.replace_between(target, start, end, f"{name} {i}")


def test_blocks_written_at_once_by_two_processes_are_both_kept(tmp_path):
    import multiprocessing

    path = tmp_path / "README.md"
    path.write_text("".join(f"<!-- {n}:start -->\n<!-- {n}:end -->\n" for n in "ab"))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(path), n, 100)) for n in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    text = path.read_text()
    assert "a 99\n" in text and "b 99\n" in text, text
