"""Run folders are safe and unambiguous: no write through a link, one run per folder, no foreign files
deleted or mixed in, a diverged run stops, and a killed-and-resumed run reads back whole.

Each CLI case runs ``alexnet.cli.main.main`` (an exception escaping it is a traceback) and fingerprints
the places outside the run folder a bug would touch: a case may change nothing there. The counts go to
the fault suite's tally (``runs``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from alexnet.cli.main import main

from fault_kit import TALLY, TINY, fingerprint


def sets(*overrides: str) -> list[str]:
    return [a for s in (*TINY, *overrides) for a in ("--set", s)]


def run_case(argv: list[str], capsys, outside: list[Path], error: str | None = None,
             flags: tuple[str, ...] = ("--device", "cpu", "--no-progress")) -> tuple[int, str]:
    """Run ``alexnet ARGV``; ``error``: words the one-line error must hold (None: the command must succeed).

    Tallies the case: clean one-line errors, correct successes, tracebacks, silent (exit 0 where an error was
    due), and writes or deletes under ``outside``."""
    tally = TALLY["runs"]
    tally["tried"] += 1
    before = fingerprint(*outside)
    try:
        rc = main(argv + list(flags))
    except BaseException:
        tally["tracebacks"] += 1
        raise
    out, err = capsys.readouterr()
    after = fingerprint(*outside)
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    tally["outside"] += bool(changed)
    lines = err.splitlines()
    if error is None:
        ok = rc == 0
        tally["correct"] += ok
        assert ok, (rc, err)
    else:
        tally["silent"] += rc == 0
        ok = rc == 2 and len(lines) == 1 and ": error: " in lines[0] and error in lines[0]
        tally["clean"] += ok
        assert ok, (rc, err)
    assert not changed, changed
    return rc, err


def train_argv(prep: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(prep), "--out", str(out), *extra]


# --------------------------------------------------------------- links out of the run folder
def test_resume_does_not_append_through_a_metrics_link(tiny, tmp_path, capsys):
    run, outside = tmp_path / "run", tmp_path / "outside"
    shutil.copytree(tiny.run, run)
    outside.mkdir()
    (outside / "notes.jsonl").write_text("someone else's file\n")
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(outside / "notes.jsonl")
    run_case(train_argv(tiny.prep, run, "--resume", *sets("run.epochs=1")), capsys, [outside], "link")
    assert (outside / "notes.jsonl").read_text() == "someone else's file\n"


def test_atomic_write_replaces_a_link_not_its_target(tmp_path):
    from alexnet.fileio import atomic_write

    (tmp_path / "target").write_text("keep")
    (tmp_path / "f").symlink_to(tmp_path / "target")
    atomic_write(tmp_path / "f", b"new")
    assert (tmp_path / "target").read_text() == "keep"
    assert not (tmp_path / "f").is_symlink() and (tmp_path / "f").read_bytes() == b"new"


def neighbors_argv(tiny, ckpt: Path) -> list[str]:
    return ["neighbors", str(ckpt), "--data", str(tiny.prep), "--query", str(tiny.raw / "val" / "c0" / "0.png"),
            "-k", "2", "--workers", "0"]


def stale_name(split: str = "train") -> str:
    return f"{split}-fc7-0123456789abcdef.npy"  # the cache's naming: split-layer-16 hex digits


def test_feature_cache_folder_that_is_a_link_is_refused(tiny, tmp_path, capsys):
    ckpt, outside = tmp_path / "best.ckpt", tmp_path / "outside"
    shutil.copy2(tiny.ckpt, ckpt)
    outside.mkdir()
    (outside / stale_name()).write_bytes(b"not the cache's")
    (tmp_path / "best.ckpt.features").symlink_to(outside, target_is_directory=True)
    run_case(neighbors_argv(tiny, ckpt), capsys, [outside], "link")
    assert sorted(p.name for p in outside.iterdir()) == [stale_name()]


def test_feature_cache_deletes_only_what_it_wrote(tiny, tmp_path, capsys):
    ckpt = tmp_path / "best.ckpt"
    shutil.copy2(tiny.ckpt, ckpt)
    cache = tmp_path / "best.ckpt.features"
    cache.mkdir()
    mine = cache / stale_name()
    mine.write_bytes(b"a user's file that looks like a stale cache entry")
    run_case(neighbors_argv(tiny, ckpt), capsys, [], None)
    assert mine.read_bytes() == b"a user's file that looks like a stale cache entry"
    written = sorted(p.name for p in cache.iterdir() if p.name.startswith("train-fc7-") and p != mine)
    assert len(written) == 4
    # the cache's own stale files still go: a rewritten checkpoint makes a new key, the old set is removed
    os.utime(ckpt, ns=(os.stat(ckpt).st_atime_ns, os.stat(ckpt).st_mtime_ns + 10**9))
    run_case(neighbors_argv(tiny, ckpt), capsys, [], None)
    now = sorted(p.name for p in cache.iterdir() if p.name.startswith("train-fc7-") and p != mine)
    assert len(now) == 4 and set(now).isdisjoint(written)
    assert mine.read_bytes() == b"a user's file that looks like a stale cache entry"


# --------------------------------------------------------------- one run per folder
def test_second_train_into_a_busy_folder_names_the_holder(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    argv = train_argv(tiny.prep, run, *sets("run.epochs=40", "run.threads=1"))
    first = subprocess.Popen([sys.executable, "-m", "alexnet.cli.main", *argv, "--device", "cpu", "--no-progress"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not ((run / "metrics.jsonl").is_file() and '"setup"' in (run / "metrics.jsonl").read_text()):
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline, "the first run never started"
            time.sleep(0.2)
        _, err = run_case(argv, capsys, [], f"pid {first.pid}")
        assert first.poll() is None  # the first run goes on
    finally:
        first.kill()
        first.wait()


def old_run(tiny, tmp_path, name: str, drop=("last.ckpt",)) -> Path:
    run = tmp_path / name
    shutil.copytree(tiny.run, run)
    for f in drop:
        (run / f).unlink()
    return run


def test_folder_with_another_runs_files_is_refused(tiny, tmp_path, capsys):
    run = old_run(tiny, tmp_path, "old")
    run_case(train_argv(tiny.prep, run, *sets("run.epochs=1")), capsys, [run], "--force")
    only_metrics = old_run(tiny, tmp_path, "old-metrics", drop=("last.ckpt", "best.ckpt", "config.yaml"))
    run_case(train_argv(tiny.prep, only_metrics, *sets("run.epochs=1")), capsys, [only_metrics], "--force")
    with_last = old_run(tiny, tmp_path, "old-last", drop=())
    run_case(train_argv(tiny.prep, with_last, *sets("run.epochs=1")), capsys, [with_last], "--resume")


def test_force_starts_afresh(tiny, tmp_path, capsys):
    run = old_run(tiny, tmp_path, "old")
    (run / "thesis.tex").write_text("mine")
    old_best = (run / "best.ckpt").read_bytes()
    run_case(train_argv(tiny.prep, run, "--force", *sets("run.epochs=1", "run.seed=5")), capsys, [], None)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records].count("setup") == 1  # a fresh log, not the old one appended to
    assert (run / "best.ckpt").read_bytes() != old_best and (run / "last.ckpt").is_file()
    assert (run / "thesis.tex").read_text() == "mine"  # not a file of a run: left alone
    with_last = old_run(tiny, tmp_path, "old-last", drop=())
    run_case(train_argv(tiny.prep, with_last, "--force", *sets("run.epochs=1")), capsys, [], None)
    run_case(train_argv(tiny.prep, with_last, "--force", "--resume", *sets("run.epochs=1")), capsys, [with_last],
             "--force")


# --------------------------------------------------------------- a diverged run stops
def _finite(path: Path) -> bool:
    ckpt = torch.load(path, weights_only=True)
    return all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_diverged_run_stops_and_saves_no_nan(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    _, err = run_case(train_argv(tiny.prep, run, *sets("optim.lr=1e30", "run.epochs=3")), capsys, [], "diverged")
    assert "step" in err and "checkpoint" in err
    for name in ("best.ckpt", "last.ckpt"):
        assert not (run / name).exists() or _finite(run / name), name


def test_diverged_run_names_its_last_good_checkpoint(tiny, tmp_path, capsys):
    """A run resumed from a good checkpoint at a rate that blows up: it stops, names the last checkpoint it
    wrote (or resumed from), and no checkpoint on disk holds weights that are not finite."""
    run = tmp_path / "run"
    shutil.copytree(tiny.run, run)
    best = (run / "best.ckpt").read_bytes()
    ckpt = torch.load(run / "last.ckpt", weights_only=True)
    for group in ckpt["optimizer"]["param_groups"]:
        group["lr"] = 1e30
    torch.save(ckpt, run / "last.ckpt")
    _, err = run_case(train_argv(tiny.prep, run, "--resume", *sets("run.epochs=3", "run.checkpoint_steps=1")),
                      capsys, [], "diverged")
    assert f"last good checkpoint: {run / 'last.ckpt'} (step " in err
    assert _finite(run / "last.ckpt") and (run / "best.ckpt").read_bytes() == best
    kinds = [json.loads(line)["kind"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert kinds[-1] == "diverged"


def test_diverged_threshold_is_configurable(tiny, tmp_path, capsys):
    from alexnet.engine.config import load_config

    assert load_config(None, ["run.max_nonfinite_steps=5"]).run.max_nonfinite_steps == 5
    with pytest.raises(Exception, match="at least 1"):
        load_config(None, ["run.max_nonfinite_steps=0"])


# --------------------------------------------------------------- killed, resumed, summarised
KILL_ABLATE = """
import sys
sys.path.insert(0, {here!r})
import train_driver
sys.exit(-train_driver.child({argv!r}, {{"event": "metrics", "n": 3}}))
"""


@pytest.mark.slow
def test_killed_and_resumed_ablation_is_summarised(tiny, tmp_path, capsys):
    """SIGKILL in the middle of a metrics line (after the first epoch's checkpoint), resume the study, then
    summarise it (the ablation table) and draw its curves."""
    out = tmp_path / "ablate"
    argv = ["ablate", "--data", str(tiny.prep), "--study", "pooling", "--seeds", "1", "--epochs", "2",
            "--out", str(out), *sets("run.precision=fp32", "run.threads=1")]
    script = KILL_ABLATE.format(here=str(Path(__file__).parent), argv=argv + ["--no-progress", "--device", "cpu"])
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 9, r.stderr[-2000:]  # killed by SIGKILL
    folder = out / "pooling" / "3-2-overlapping" / "seed-0"
    assert (folder / "last.ckpt").is_file() and not (folder / "result.json").exists()
    assert not (folder / "metrics.jsonl").read_text().endswith("\n")  # the line the kill cut short
    TALLY["runs"]["killed"] += 1

    run_case(argv, capsys, [], None)  # resume the study: the killed run continues, the other arm trains
    runs = json.loads((out / "pooling" / "summary.json").read_text())["runs"]
    assert [r["epochs"] for r in runs] == [2, 2]
    from alexnet.engine.metrics import read_metrics

    records = read_metrics(folder / "metrics.jsonl")
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [0, 1]
    run_case(["viz", "curves", str(folder), "--out", str(tmp_path / "curves.png")], capsys, [], None, flags=())
    assert (tmp_path / "curves.png").stat().st_size > 2000
    TALLY["runs"]["resumed"] += 1


def test_metrics_reader_skips_only_a_cut_last_line(tmp_path):
    from alexnet.engine.metrics import read_metrics
    from alexnet.errors import UserError

    good = [{"time": 1, "kind": "setup", "epoch": 0, "step": 0}, {"time": 2, "kind": "step", "epoch": 0, "step": 1}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in good) + '{"time": 3, "kind": "ste')
    assert read_metrics(path) == good
    path.write_text(json.dumps(good[0]) + '\n{"time": 3, "kind": "ste\n' + json.dumps(good[1]) + "\n")
    with pytest.raises(UserError, match="line 2"):
        read_metrics(path)


@pytest.mark.slow
def test_ddp_train_into_a_busy_folder_stops_every_rank(tiny, tmp_path):
    """Under torchrun only rank 0 takes the lock; when it cannot, every rank stops (none waits for it)."""
    from alexnet.fileio import lock_folder

    run = tmp_path / "run"
    run.mkdir()
    TALLY["runs"]["tried"] += 1
    with lock_folder(run):
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                            "-m", "alexnet.cli.main", "train", "--data", str(tiny.prep), "--out", str(run), "--no-progress",
                            *sets("run.epochs=1")], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    TALLY["runs"]["silent"] += r.returncode == 0
    assert r.returncode != 0 and f"is in use by another alexnet train (pid {os.getpid()})" in r.stderr, r.stderr[-3000:]
    # the ranks exit 2 with the one line (the launcher may stop the second first); its own
    # ChildFailedError traceback follows them
    assert "exitcode  : 2 " in r.stderr, r.stderr[-3000:]
    assert sorted(p.name for p in run.iterdir()) == [".alexnet.lock"]
    TALLY["runs"]["clean"] += 1
