"""Wiring for ``alexnet train``: config + prepared data -> run folder.

The run folder holds ``config.yaml`` (resolved), ``metrics.jsonl``,
``last.ckpt`` (every epoch, and every N minutes/steps if asked) and
``best.ckpt`` (lowest validation top-1 error). Under torchrun the same code
trains with DistributedDataParallel; rank 0 alone writes.

One run per folder: rank 0 holds the folder's lock (``fileio.lock_folder``)
for the run's life, and a folder that holds another run's files is refused
unless the run resumes it (``resume``) or starts afresh over it (``force``).
No file of the folder is written through a symbolic link. A loss that is
not finite for ``run.max_nonfinite_steps`` steps in a row ends the run (a
one-line UserError naming the last good checkpoint), and a checkpoint whose
weights are not finite is never written.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .. import kernels, models
from ..checkpoint import check_compatible, load_checkpoint, make_checkpoint, save_checkpoint, unwrap
from ..data import is_small, load_stats, read_meta
from ..data.loader import LoaderSpec, ShardLoader, decode_location
from ..data.transforms import eval_spec
from ..errors import UserError, state_dict_mismatch
from ..fileio import LOCK_NAME, FolderLock, atomic_write, check_unlocked, lock_folder, remove_temporaries
from ..models.options import RECIPE_KEYS, ModelOptions
from . import config as config_mod
from .allocator import keep_freed_memory
from .distributed import DistInfo, all_reduce_sum, barrier, init_distributed
from .inference import TTA_VIEWS
from .loop import TrainState, evaluate, precision_warning, resolve_precision, train_one_epoch
from .metrics import MetricsLog
from .optim import OneCycleSchedule, PlateauSchedule, make_optimizer


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(cuda: bool = False) -> dict:
    """The generators' states; ``cuda``: the GPUs' too (a run on the CPU leaves CUDA alone, even where there is one)."""
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]), "python_pos": random.getstate()[2]}
    np_state = np.random.get_state()
    state["numpy"] = torch.from_numpy(np_state[1].astype(np.int64))
    state["numpy_pos"] = int(np_state[2])
    if cuda and torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(int(v) for v in state["python"]), state.get("python_pos")))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(state["numpy_pos"]), 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def set_determinism(deterministic: bool) -> None:
    """``run.deterministic``: the same bits from the same seed on CUDA too, where PyTorch can give them.

    On: deterministic algorithms (an op that has none on CUDA warns, naming itself), cuDNN's deterministic
    convolutions, and cuBLAS's fixed workspace (``CUBLAS_WORKSPACE_CONFIG``, read when cuBLAS starts: call
    this before the first CUDA work). Off: cuDNN benchmarks the convolution algorithms for each shape and
    keeps the fastest, which may differ from run to run. A CPU run is bitwise reproducible either way.
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


RUN_FILES = ("config.yaml", "metrics.jsonl", "last.ckpt", "best.ckpt")  # what a run writes in its folder


def model_options(cfg: config_mod.TrainConfig, meta: dict) -> dict:
    """Options for ``models.create``, as a checkpoint stores them: the recipe's model section, and what the
    prepared data says (the classes, the channels, and the size of small images, used at their own size)."""
    data = {"num_classes": len(meta["classes"]), "in_channels": int(meta.get("channels", 3))}
    if cfg.model.input_size is None and is_small(meta.get("size", 256)):
        data["input_size"] = int(meta["size"])
    recipe = {k: getattr(cfg.model, k) for k in RECIPE_KEYS}
    return ModelOptions.parse({**recipe, **data}).stored()


class Trainer:
    """Builds everything from a config and runs epochs; see :func:`fit`."""

    def __init__(self, cfg: config_mod.TrainConfig, data: str | os.PathLike, out: str | os.PathLike,
                 resume: bool = False, progress: bool = True, epoch_lines: bool | None = None,
                 force: bool = False):
        # ``force``: start afresh in a folder that holds another run (its run files are removed first).
        # ``progress``: bars; ``epoch_lines``: one line per epoch on stdout (default: with the bars). A command
        # whose output is not a terminal draws no bars but still prints the epoch lines (cli.train).
        self.epoch_lines = progress if epoch_lines is None else epoch_lines
        # The resolved config names the data folder, so `alexnet report RUN` finds it without --data.
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=os.path.abspath(data)))
        self.cfg, self.data, self.out, self.progress = cfg, Path(data), Path(out), progress
        set_determinism(cfg.run.deterministic)  # before CUDA starts
        self.dist: DistInfo = init_distributed(cfg.run.device)
        if cfg.run.threads > 0:
            torch.set_num_threads(cfg.run.threads)
        self.meta, self.stats = self._read_data()
        self.rank_batch = self._rank_batch()
        self.check_folder(resume, force)
        resume_from = self._checkpoint_to_resume(resume)
        seed_everything(cfg.run.seed)
        self.state = self._build_state(self._build_model())
        self.best_err = math.inf
        self.history: dict = {}
        self._nonfinite = 0  # steps in a row whose loss was not finite
        self._last_good: tuple[Path, int] | None = None  # the last checkpoint written (or resumed from), its step
        if resume_from is not None:
            self._restore(resume_from)
            self._last_good = (self.out / "last.ckpt", self.state.step)
        self._wrap_model()
        self._lock: FolderLock | None = None
        self._take_folder(resume, force)
        try:
            if self.dist.is_main:
                atomic_write(self.out / "config.yaml", lambda f: f.write(config_mod.dump(cfg).encode()))
            self.log = MetricsLog(self.out, enabled=self.dist.is_main)
        except BaseException:
            self.close()
            raise
        # What "auto" settings became on this machine (run.precision=auto: bf16 or fp32).
        self.log.write("setup", device=str(self.dist.device), precision=self.state.precision,
                       world_size=self.dist.world_size, epoch=self.state.epoch, step=self.state.step)
        self._last_save = time.monotonic()
        self._logged = (-1, 0, 0)  # (epoch, correct, seen) at the last step line

    # ----------------------------------------------------------------- setup
    def _read_data(self) -> tuple[dict, dict]:
        """The prepared folder's meta.json and statistics; it must have a train split."""
        if not self.data.is_dir():
            raise UserError(f"prepared data folder not found: {self.data}")
        meta = read_meta(self.data)
        stats = load_stats(self.data)
        if "train" not in meta.get("splits", {}):
            raise UserError(f"{self.data} has no train split (splits: {', '.join(meta.get('splits', {}))})")
        return meta, stats

    def _rank_batch(self) -> int:
        """This process's share of the global batch, which must split over processes and accumulation steps."""
        world, acc, batch = self.dist.world_size, self.cfg.optim.accumulate, self.cfg.data.batch_size
        if batch % (world * acc):
            raise UserError(f"data.batch_size {batch} does not split into {world} processes x {acc} accumulation steps")
        return batch // world

    def check_folder(self, resume: bool, force: bool, locked: bool = False) -> None:
        """Refuse a run folder this run must not write: one another run is training in, one whose run files are
        links (or not files), or one that holds another run's files, unless ``resume`` (continue it) or
        ``force`` (start afresh over it). ``locked``: this process holds the folder's lock."""
        if resume and force:
            raise UserError("--force starts afresh and --resume continues: pass one of them")
        if not locked:
            check_unlocked(self.out)
        for name in (*RUN_FILES, LOCK_NAME, "tb"):
            p = self.out / name
            if os.path.islink(p):
                raise UserError(f"refusing to write through {p}: it is a symbolic link (remove it)")
            if name != "tb" and os.path.lexists(p) and not p.is_file():
                raise UserError(f"{p} is not a file: remove it or choose another --out")
        if resume or force:
            return
        if (self.out / "last.ckpt").exists():
            raise UserError(f"{self.out} already holds a run (last.ckpt); pass --resume to continue it, --force to "
                            f"start afresh over it, or choose another --out")
        found = [n for n in RUN_FILES if (self.out / n).exists()]
        if found:
            raise UserError(f"{self.out} holds another run's files ({', '.join(found)}) and no last.ckpt to resume "
                            f"from; pass --force to start afresh over them, or choose another --out")

    def _take_folder(self, resume: bool, force: bool) -> None:
        """Rank 0 locks the run folder (made if missing) for the run's life and checks it again under the lock;
        ``force`` then removes the earlier run's files. Every rank learns whether it may go on (no rank waits
        on one that stopped)."""
        error = None
        if self.dist.is_main:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
                self._lock = lock_folder(self.out)
                self.check_folder(resume, force, locked=True)  # another run may have started or ended meanwhile
                if resume and not (self.out / "last.ckpt").is_file():
                    raise UserError(f"--resume: no checkpoint to resume from at {self.out / 'last.ckpt'}")
                if force:
                    for name in RUN_FILES:  # config.yaml is written anew below
                        (self.out / name).unlink(missing_ok=True)
                remove_temporaries(self.out)  # a write cut short by a kill; no other writer now
            except BaseException as e:
                error = e
        if self.dist.enabled:
            failed = all_reduce_sum(torch.tensor([float(error is not None)], device=self.dist.device))
            if error is None and float(failed.item()) > 0:
                error = UserError(f"rank 0 could not take the run folder {self.out}")
        if error is not None:
            self.close()
            raise error

    def close(self) -> None:
        """Release the run folder (its lock, the metrics log); a Trainer that is closed cannot train."""
        log = getattr(self, "log", None)
        if log is not None:
            log.close()
        if getattr(self, "_lock", None) is not None:
            self._lock.release()
            self._lock = None

    def _checkpoint_to_resume(self, resume: bool) -> dict | None:
        """``last.ckpt`` read for ``--resume`` (it must fit the run)."""
        last = self.out / "last.ckpt"
        if not resume:
            return None
        if not last.is_file():
            raise UserError(f"--resume: no checkpoint to resume from at {last}")
        ckpt = load_checkpoint(last)
        check_compatible(ckpt, self.cfg.model.name, len(self.meta["classes"]), last, classes=self.meta["classes"])
        return ckpt

    def _build_model(self) -> torch.nn.Module:
        """The config's model on this process's device; its input size and scale set what the loaders feed it."""
        cfg = self.cfg
        try:
            model = models.create(cfg.model.name, **model_options(cfg, self.meta))
        except ValueError as e:
            raise UserError(str(e)) from None
        self.input_size = model.cfg.input_size
        self.scale = cfg.data.scale if cfg.data.scale is not None else model.cfg.input_scale
        device = self.dist.device
        if device.type == "cpu":
            if cfg.run.cpu_malloc:
                keep_freed_memory()
            if model.cfg.lrn is not None:
                kernels.warm_up()  # build (once) or load it now, not under the first progress bar
        model.to(device)
        if cfg.run.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def _build_state(self, model: torch.nn.Module) -> TrainState:
        """Optimizer, learning-rate schedule and loss scaler around ``model``."""
        o, sch, run = self.cfg.optim, self.cfg.schedule, self.cfg.run
        lr = o.lr * self.cfg.data.batch_size / o.lr_batch if o.lr_batch else o.lr  # linear scaling to the batch
        fused = o.fused if o.fused is not None else o.rule == "torch" and self.dist.device.type == "cuda"
        try:
            optimizer = make_optimizer(model.parameters(), o.rule, lr, o.momentum, o.weight_decay, fused=fused)
        except ValueError as e:
            raise UserError(f"optim.fused: {e}") from None
        if sch.kind == "onecycle":  # its length is set by fit(), from the train loader
            schedule = OneCycleSchedule(optimizer, sch.warmup_steps)
        else:
            schedule = PlateauSchedule(optimizer, sch.patience, sch.factor, sch.max_drops, sch.min_delta,
                                       sch.warmup_steps)
        precision = resolve_precision(run.precision, self.dist.device)
        warning = precision_warning(precision, self.dist.device)
        if warning and self.dist.is_main:
            print(f"alexnet train: warning: {warning}", file=sys.stderr, flush=True)
        scaler = torch.amp.GradScaler(self.dist.device.type, enabled=precision == "fp16")
        return TrainState(model, optimizer, scaler, self.dist.device, precision, o.accumulate, run.channels_last,
                          schedule=schedule, label_smoothing=o.label_smoothing, read_every=run.log_every)

    def _wrap_model(self) -> None:
        """DDP over the processes of a torchrun launch, then ``torch.compile`` when asked."""
        s = self.state
        if self.dist.enabled:
            ddp_kw = {"device_ids": [s.device.index]} if s.device.type == "cuda" else {}
            s.model = torch.nn.parallel.DistributedDataParallel(s.model, **ddp_kw)
        if self.cfg.run.compile:
            s.model = torch.compile(s.model)

    @property
    def schedule(self) -> PlateauSchedule:
        return self.state.schedule

    # ------------------------------------------------------------ checkpoints
    def _restore(self, ckpt: dict) -> None:
        model = unwrap(self.state.model)
        try:
            model.load_state_dict(ckpt["state_dict"])
        except RuntimeError as e:
            raise UserError(f"last.ckpt does not fit this model: {state_dict_mismatch(e)}") from None
        self.state.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        if ckpt.get("scaler"):
            self.state.scaler.load_state_dict(ckpt["scaler"])
        self.state.epoch = int(ckpt["epoch"])
        self.state.step = int(ckpt["step"])
        self.state.batch_in_epoch = int(ckpt["batch_in_epoch"])
        self.state.loss_sum = float(ckpt.get("loss_sum", 0.0))
        self.state.seen = int(ckpt.get("seen", 0))
        self.state.correct = int(ckpt.get("correct", 0))
        self.best_err = float(ckpt.get("metrics", {}).get("best_top1_err", math.inf))
        if ckpt.get("world_size", 1) == self.dist.world_size and "rng" in ckpt:
            set_rng_state(ckpt["rng"])

    def payload(self, metrics: dict) -> dict:
        s, meta = self.state, self.meta
        return make_checkpoint(
            self.cfg.model.name, model_options(self.cfg, meta), unwrap(s.model).state_dict(), meta["classes"],
            meta.get("class_names"),
            eval_spec(int(meta.get("size", 256)), self.input_size, self.cfg.data.mean,
                      channels=int(meta.get("channels", 3)), scale=self.scale),
            self.stats,
            config=config_mod.to_dict(self.cfg),
            optimizer=s.optimizer.state_dict(),
            schedule=self.schedule.state_dict(),
            scaler=s.scaler.state_dict() if s.scaler.is_enabled() else {},
            epoch=s.epoch,
            step=s.step,
            batch_in_epoch=s.batch_in_epoch,
            loss_sum=s.loss_sum,
            seen=s.seen,
            correct=s.correct,
            world_size=self.dist.world_size,
            rng=rng_state(cuda=s.device.type == "cuda"),
            metrics={**metrics, "best_top1_err": self.best_err},
        )

    def save(self, metrics: dict | None = None, best: bool = False) -> None:
        """Write last.ckpt (and best.ckpt, the same payload) from rank 0; weights that are not finite are never
        written: the run has diverged (a one-line UserError naming the last good checkpoint)."""
        if self.dist.is_main:
            weights = unwrap(self.state.model).state_dict()
            floats = [t for t in weights.values() if t.is_floating_point()]
            if floats and not bool(torch.stack([torch.isfinite(t).all() for t in floats]).all()):  # one sync
                self._diverged("the weights are no longer finite")
            payload = self.payload(metrics or self.history)
            save_checkpoint(self.out / "last.ckpt", payload)
            if best:
                save_checkpoint(self.out / "best.ckpt", payload)
            self._last_good = (self.out / "last.ckpt", self.state.step)
        self._last_save = time.monotonic()

    def _diverged(self, why: str) -> None:
        """End the run: it diverged at this step (nothing more is saved)."""
        if self._last_good is None:
            good = "no checkpoint was written before it"
        else:
            good = f"last good checkpoint: {self._last_good[0]} (step {self._last_good[1]})"
        self.log.write("diverged", epoch=self.state.epoch, step=self.state.step, reason=why)
        raise UserError(f"training diverged at step {self.state.step}: {why}; {good} "
                        f"(a lower optim.lr may help)")

    # ------------------------------------------------------------------- run
    def _on_step(self, state: TrainState, loss: float, ips: float) -> None:
        run = self.cfg.run
        # The loop reads the device's sums every run.log_every steps and at the epoch's end (loss is None at the
        # other steps): the longest run of non-finite losses since the last read is counted then, at no extra
        # sync. With fp16 the GradScaler skips a step whose gradients overflowed; only a loss that is itself NaN
        # or infinite counts here.
        if loss is not None:
            self._nonfinite = state.nonfinite_steps
            if self._nonfinite >= run.max_nonfinite_steps:
                self._diverged(f"the training loss was not finite for {self._nonfinite} steps in a row")
        lr = self.schedule.lr
        if state.step % run.log_every == 0:
            # training error over the steps since the last line (the epoch's, when it began since)
            correct, seen = (0, 0) if self._logged[0] != state.epoch else self._logged[1:]
            self._logged = (state.epoch, state.correct, state.seen)
            self.log.write("step", epoch=state.epoch, step=state.step, lr=lr, train_loss=loss,
                           train_top1_err=1 - (state.correct - correct) / max(state.seen - seen, 1),
                           images_per_s=ips * self.dist.world_size)
        due = (run.checkpoint_steps and state.step % run.checkpoint_steps == 0) or (
            run.checkpoint_minutes and time.monotonic() - self._last_save >= 60 * run.checkpoint_minutes)
        if due:
            self.save()

    def loader(self, split: str, train: bool, tta: str = "center"):
        """Batches of ``split`` on this process's device; decoded and augmented where ``data.decode`` says."""
        cfg = self.cfg
        decode = decode_location(cfg.data.decode, self.dist.device, self.meta.get("format", "jpg"))
        spec = LoaderSpec(
            split, self.rank_batch if train else max(1, self.rank_batch // TTA_VIEWS[tta]),
            train=train, tta=tta, input_size=self.input_size, seed=cfg.run.seed, epoch=self.state.epoch,
            rank=self.dist.rank, world_size=self.dist.world_size, num_workers=cfg.data.workers,
            mean=cfg.data.mean, lighting=cfg.data.lighting, scale=self.scale, device=self.dist.device, decode=decode)
        return ShardLoader(self.data, spec)

    def fit(self) -> dict:
        """Train to ``run.epochs``; the run folder is released (lock, log) at the end, whatever happens."""
        try:
            return self._fit()
        finally:
            self.close()

    def _fit(self) -> dict:
        cfg, s = self.cfg, self.state
        train_loader = self.loader("train", train=True)
        if isinstance(self.schedule, OneCycleSchedule):
            self.schedule.total_steps = cfg.run.epochs * len(train_loader)
        val_split = cfg.data.val_split if cfg.data.val_split in self.meta["splits"] else None
        val_loader = self.loader(val_split, train=False, tta=cfg.data.eval_tta) if val_split else None
        if val_split is None and self.dist.is_main:
            print(f"alexnet train: warning: {self.data} has no {cfg.data.val_split!r} split: no validation, "
                  f"best.ckpt follows the last epoch, best_top1_err is null", file=sys.stderr, flush=True)
        t0 = time.time()
        while s.epoch < cfg.run.epochs:
            train_loader.set_epoch(s.epoch, start_batch=s.batch_in_epoch)
            tick = time.perf_counter()
            seen_before = s.seen
            res = train_one_epoch(s, train_loader, self._on_step, self.progress and self.dist.is_main,
                                  desc=f"epoch {s.epoch + 1}/{cfg.run.epochs}")
            dt = time.perf_counter() - tick
            ips = (s.seen - seen_before) * self.dist.world_size / max(dt, 1e-9)
            record = {"epoch": s.epoch, "step": s.step, "lr": self.schedule.lr, "train_loss": res["train_loss"],
                      "train_top1_err": res["train_top1_err"],
                      "images_per_s": ips, "epoch_time_s": dt}
            if val_loader is not None:
                val = evaluate(s.model, val_loader, s.device, s.precision, s.channels_last,
                               self.progress and self.dist.is_main, desc="val")
                record.update(val_top1_err=val["top1_err"], val_top5_err=val["top5_err"], val_count=val["count"])
                improved = val["top1_err"] < self.best_err
                if improved:
                    self.best_err = val["top1_err"]
                if self.schedule.step(val["top1_err"]):
                    record["lr_dropped_to"] = self.schedule.lr
            else:
                improved = True
            self.log.write("epoch", **record)
            self.history = {"last": record}
            if self.epoch_lines and self.dist.is_main:
                msg = f"epoch {s.epoch + 1}/{cfg.run.epochs}: loss {res['train_loss']:.4f}, {ips:.0f} img/s"
                if "val_top1_err" in record:
                    msg += f", val top-1 err {record['val_top1_err']:.2%}, top-5 err {record['val_top5_err']:.2%}"
                print(msg, flush=True)
            s.epoch += 1
            s.batch_in_epoch, s.loss_sum, s.seen, s.correct = 0, 0.0, 0, 0
            self.save(self.history, best=improved)
        barrier()
        return {"epochs": s.epoch, "steps": s.step, "best_top1_err": self.best_err, "time_s": time.time() - t0,
                "run_dir": str(self.out), **self.history}


def fit(cfg: config_mod.TrainConfig, data, out, resume: bool = False, progress: bool = True,
        epoch_lines: bool | None = None, force: bool = False) -> dict:
    """Train per ``cfg`` on a prepared folder, writing the run folder ``out`` (see :class:`Trainer` for the flags)."""
    return Trainer(cfg, data, out, resume=resume, progress=progress, epoch_lines=epoch_lines, force=force).fit()
