"""Kill ``alexnet train`` with SIGKILL at chosen moments and resume it; run by test_kill_resume.py.

``python train_driver.py SPEC.json`` imports torch and alexnet once, then
forks one child per run, so each run costs its training, not an interpreter
start (OMP_NUM_THREADS=1: no thread pool exists to be broken by fork). Each
child runs ``alexnet train`` through the CLI's ``main``, as a user would:

1. a baseline run, uninterrupted, counting its steps, checkpoint writes,
   fsyncs, validations and metrics lines, and its time;
2. per moment, a run that SIGKILLs itself at that moment (a step, inside a
   checkpoint's bytes, between a checkpoint's fsync and its rename or after
   the rename, between last.ckpt and best.ckpt, in validation, in the middle
   of a metrics line, or a timer at a random instant), then a run that
   resumes it (``--resume`` when last.ckpt exists, else ``--force``, as ``alexnet demo`` does);
   the final weights and optimizer state are compared with the baseline's;
3. a resume under a file-size limit smaller than a checkpoint (a real
   ``EFBIG`` from the kernel, like a full disk): it must fail in one line,
   say the previous checkpoint is intact, and leave it byte for byte.

The results go to ``SPEC["results"]`` as JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import signal
import sys
import threading
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from alexnet.cli.main import main  # noqa: E402
from alexnet import checkpoint  # noqa: E402
from alexnet.engine import trainer  # noqa: E402
from alexnet.checkpoint import load_checkpoint  # noqa: E402
from alexnet.engine.metrics import MetricsLog  # noqa: E402
from alexnet import fileio  # noqa: E402
from alexnet.kernels import lrn_cpu  # noqa: E402

lrn_cpu.get()  # load (or build) the kernel once, before forking
torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # its first use imports torch._dynamo (seconds)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Counter:
    """Counts events in a child; calls ``die`` at the one its moment names."""

    def __init__(self, moment: dict | None):
        self.moment = moment or {}
        self.counts = {"step": 0, "write": 0, "fsync": 0, "eval": 0, "metrics": 0, "best": []}

    def hit(self, event: str) -> bool:
        self.counts[event] += 1
        return self.moment.get("event") == event and self.counts[event] == self.moment["n"]


def install(moment: dict | None) -> Counter:
    """Patch the trainer's seams so that ``moment`` kills this process (and every event is counted)."""
    c = Counter(moment)
    on_step = trainer.Trainer._on_step

    def _on_step(self, state, loss, ips):
        on_step(self, state, loss, ips)
        if c.hit("step"):
            die()

    trainer.Trainer._on_step = _on_step

    real_atomic_write = checkpoint.atomic_write

    def atomic_write(path, write):
        if c.hit("write"):
            if "fraction" not in moment:  # before the first byte (of best.ckpt, after last.ckpt was written)
                die()
            else:
                limit = int(moment["fraction"] * moment["size"])

                class Cut:
                    def __init__(self, f):
                        self.f, self.n = f, 0

                    def write(self, data):
                        if self.n + len(data) >= limit:
                            self.f.write(bytes(data)[:max(0, limit - self.n)])
                            self.f.flush()
                            die()
                        self.n += len(data)
                        return self.f.write(data)

                    def __getattr__(self, name):
                        return getattr(self.f, name)

                return real_atomic_write(path, lambda f: write(Cut(f)))
        if Path(path).name == "best.ckpt":
            c.counts["best"].append(c.counts["write"])
        return real_atomic_write(path, write)

    checkpoint.atomic_write = atomic_write

    real_fsync = os.fsync

    def fsync(fd):
        real_fsync(fd)
        if c.hit("fsync"):
            die()

    fileio.os.fsync = fsync  # fileio's os is the os module: this child only

    evaluate = trainer.evaluate

    def evaluate_hook(*args, **kwargs):
        if c.hit("eval"):
            die()
        return evaluate(*args, **kwargs)

    trainer.evaluate = evaluate_hook

    write = MetricsLog.write

    def metrics_write(self, kind, **values):
        if c.hit("metrics"):
            with open(self.path, "a") as f:  # half a line, then gone
                f.write('{"time": 1, "kind": "ste')
            die()
        write(self, kind, **values)

    MetricsLog.write = metrics_write
    if moment and moment.get("event") == "timer":
        threading.Timer(moment["seconds"], die).start()
    return c


def child(argv: list[str], moment: dict | None = None, log: Path | None = None, counts: Path | None = None,
          fsize: int | None = None) -> int:
    """Fork; the child runs ``alexnet ARGV`` with ``moment`` armed. Returns the exit code, or -signal."""
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            if log is not None:
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 2)
                sys.stderr = open(2, "w", closefd=False)
            if fsize is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
            c = install(moment)
            t0 = time.perf_counter()
            code = main(argv)
            if counts is not None:
                counts.write_text(json.dumps({**c.counts, "seconds": time.perf_counter() - t0}))
        except BaseException as e:  # a traceback in the child: report it as exit 71
            print(f"driver child: {type(e).__name__}: {e}", file=sys.stderr)
            code = 71
        finally:
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def train_argv(spec: dict, out: Path, resume: bool) -> list[str]:
    """``--resume`` when asked; else ``--force`` over what a run killed before its first checkpoint left."""
    argv = ["train", "--data", spec["data"], "--out", str(out), "--no-progress"]
    argv += [a for s in spec["overrides"] for a in ("--set", s)]
    return argv + (["--resume"] if resume else ["--force"] if out.exists() else [])


def same_state(a: Path, b: Path) -> bool:
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    if (ca["step"], ca["epoch"]) != (cb["step"], cb["epoch"]) or ca["state_dict"].keys() != cb["state_dict"].keys():
        return False
    if not all(torch.equal(ca["state_dict"][k], cb["state_dict"][k]) for k in ca["state_dict"]):
        return False
    sa, sb = ca["optimizer"]["state"], cb["optimizer"]["state"]
    return sa.keys() == sb.keys() and all(
        torch.equal(sa[k][n], sb[k][n]) for k in sa for n in sa[k] if isinstance(sa[k][n], torch.Tensor))


def _parses(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def moments(base: dict, size: int, seed: int, count: int) -> list[dict]:
    """``count`` kill moments drawn at random from the baseline's events, every kind at least once."""
    rng = random.Random(seed)
    kinds = [
        lambda: {"event": "step", "n": rng.randint(1, base["step"] - 1)},
        lambda: {"event": "write", "n": rng.randint(1, base["write"]), "fraction": rng.uniform(0.02, 0.98), "size": size},
        lambda: {"event": "fsync", "n": rng.randint(1, base["fsync"])},  # odd: before the rename, even: after it
        lambda: {"event": "write", "n": rng.choice(base["best"])},  # between last.ckpt and best.ckpt
        lambda: {"event": "eval", "n": rng.randint(1, base["eval"])},
        lambda: {"event": "metrics", "n": rng.randint(1, base["metrics"])},
        lambda: {"event": "timer", "seconds": rng.uniform(0.05, 0.95) * base["seconds"]},
    ]
    picks = list(range(len(kinds))) + [rng.choice([0, 1, 1, 2]) for _ in range(count - len(kinds))]
    return [kinds[k]() for k in picks]


def run(spec: dict) -> dict:
    work = Path(spec["work"])
    base_out = work / "baseline"
    code = child(train_argv(spec, base_out, False), counts=work / "baseline.json")
    assert code == 0, f"baseline run failed: {code}"
    base = json.loads((work / "baseline.json").read_text())
    size = (base_out / "last.ckpt").stat().st_size
    results = {"baseline": base, "kills": [], "disk": None}
    for i, m in enumerate(moments(base, size, spec["seed"], spec["kills"])):
        out = work / f"kill{i:02d}"
        killed = child(train_argv(spec, out, False), m)
        last = out / "last.ckpt"
        try:
            readable = not last.exists() or bool(load_checkpoint(last))
        except Exception:
            readable = False
        temporaries = sorted(p.name for p in out.glob(".*.tmp"))
        resumed = child(train_argv(spec, out, last.exists()), log=work / f"kill{i:02d}.log")
        metrics = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []
        results["kills"].append({
            "moment": m, "killed": killed == -signal.SIGKILL, "exit": killed, "readable": readable,
            "temporaries_after_kill": temporaries, "resumed": resumed,
            "resume_log": (work / f"kill{i:02d}.log").read_text()[-500:],
            "left_after_resume": sorted(p.name for p in out.glob(".*.tmp")),
            "metrics_bad_lines": sum(not _parses(line) for line in metrics),
            "equal": resumed == 0 and same_state(base_out / "last.ckpt", last),
        })

    # a checkpoint write that fails for lack of room: stop at a step after the first checkpoint, resume under a limit
    out = work / "full"
    assert child(train_argv(spec, out, False), {"event": "step", "n": spec["disk_step"]}) == -signal.SIGKILL
    before = hashlib.sha256((out / "last.ckpt").read_bytes()).hexdigest()
    code = child(train_argv(spec, out, True), log=work / "full.log", fsize=size // 2)
    results["disk"] = {
        "exit": code, "stderr": (work / "full.log").read_text(),
        "intact": hashlib.sha256((out / "last.ckpt").read_bytes()).hexdigest() == before,
        "left": sorted(p.name for p in out.glob(".*.tmp")),
    }
    return results


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    Path(spec["results"]).write_text(json.dumps(run(spec), indent=1))
