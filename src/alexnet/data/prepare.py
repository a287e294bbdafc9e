"""``prepare``: any source -> square images in tar shards, an index, statistics, meta.json.

The prepared folder (``OUT``)::

    meta.json            classes, class_names, splits (counts), shards, size, channels,
                         format (jpg | raw), source, shuffle_seed, version; written last
                         (alexnet.data.meta)
    stats.npz            mean_image, mean_rgb, eigval, eigvec (and cov, count) of train,
                         in pixel units 0..255 (see alexnet.data.stats)
    skipped.txt          one line per unusable source file, a JSON object
                         {"split", "path", "reason"} (+ "path_hex", see skipped_line)
    <split>-NNNNNN.tar   the shards (see alexnet.data.shards)
    <split>.index.npy    (shard, offset, size, label) per sample, for random access
    .prepare/            the plan and one part file per finished shard (for resuming)

Images larger than small images (a side over ``SMALL_IMAGE_SIDE``, 64 px,
see alexnet.data.meta) are rescaled (shorter side to ``size``, 256 by
default), centre-cropped and stored as JPEG (quality 95). Sources of small
images (IDX, CIFAR, a small generated folder) are not upscaled: they keep
their own size (a folder's: its largest shorter side, or ``size`` if
smaller; IDX and CIFAR: always their own) and are stored raw, uint8,
lossless; so is anything prepared with a ``size`` of 64 or less. Folder
sources are probed on 32 training files to tell.

Order: each split is written in a fixed shuffled order
(:func:`alexnet.data.shards.shuffled_order` of ``seed``, recorded in
meta.json as ``shuffle_seed``), so each shard holds a mix of classes; the
sample ids (rows of the index) follow that order, and a sample's key in its
shard is ``<split>_<index in the source listing>``.

Resumable and atomic: the work is cut into shards with a fixed plan; a shard
counts as done once its tar and then its part file (its index rows, skipped
files and statistics sums) have been renamed into place, so a killed run
never leaves half a shard counted. A rerun with the same source and settings
redoes only the missing shards; other settings into the same OUT are refused.
Statistics are summed per shard while it is written (one pass, float64) and
merged at the end. The shards of the jpg format are statistics of the JPEG
as stored, decoded by the loader's decoder, so the mean subtracted in
training is the mean of what the loader yields.

Several processes or machines, under ``torchrun`` (gloo; no GPU used)::

    torchrun --nproc-per-node 2 -m alexnet.cli.main prepare SRC OUT
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --rdzv-backend c10d \
        --rdzv-endpoint HOST0:29500 -m alexnet.cli.main prepare SRC OUT   # and --node-rank 1 on HOST1

Every rank lists SRC and makes the same plan (checked: the ranks compare the
fingerprint of the listing and settings and a digest of the plan); rank r
writes shards r, r + W, r + 2W, ... of it (W ranks), each with its own
``--workers`` processes (default: the machine's cores shared among its
ranks). SRC and OUT must be the same folders on every rank: on several
machines, a shared filesystem. Only rank 0 checks OUT and writes the plan;
the others check they see it. After the last shard all ranks meet and rank 0
alone merges the part files, in the plan's shard order whoever wrote them
(statistics from float64 sums, not an average of averages), so the folder is
the one a single process writes: the same shard bytes, index and meta.json,
and stats.npz equal to float rounding. Rank 0 merges only when every shard of
the plan is done (else a one-line error naming the missing ones); a run where
a rank died is finished by rerunning it, with any number of ranks. More ranks
than shards is refused before anything is written (use a smaller
``--shard-size``). A step that fails on one rank stops every rank with a
one-line error.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import multiprocessing as mp
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import UserError, one_line
from ..fileio import atomic_write, remove_temporaries
from .images import MAX_IMAGE_BYTES, MAX_PIXELS, BadImage, load_square, probe_size
from .meta import META_FILE, VERSION, is_small, read_meta  # noqa: F401  (read_meta re-exported for older callers)
from .shards import Member, ShardWriter, decode_jpegs, shard_name, shuffled_order
from .sources import Source, open_source
from .stats import STATS_FILE, PixelStats

JPEG_QUALITY = 95
SHARD_BYTES = 64 << 20  # target size of one shard
SHUFFLE_SEED = 0  # the default seed of the order samples are written in
SKIPPED_FILE, WORK_DIR = "skipped.txt", ".prepare"
PREPARE_TIMEOUT_HOURS = 48  # under torchrun: how long a rank waits for the others at a meeting point


@dataclass
class Task:
    """Shard ``number`` of ``split``: the source samples ``ids`` (positions ``start:stop`` of the shuffled order)."""

    split: str
    number: int
    start: int
    stop: int
    ids: np.ndarray


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def samples_per_shard(fmt: str, side: int, channels: int) -> int:
    """Samples per shard so that one shard is about SHARD_BYTES (a JPEG taken as 1/4 of raw)."""
    pixels = side * side * channels
    per_sample = (pixels // 4 if fmt == "jpg" else pixels + 128) + 3 * 512  # + tar headers and .cls
    return max(1, SHARD_BYTES // per_sample)


def choose_side(source: Source, size: int, max_pixels: int, max_bytes: int = MAX_IMAGE_BYTES) -> tuple[int, str]:
    """``(side, format)``: small sources keep their size (raw); others get ``size`` (jpg unless small)."""
    train = source.splits["train"]
    if source.is_array:
        h, w = train.images.shape[1:3]
        if h != w:
            raise UserError(f"{source.root}: images of {h} x {w} are not square")
        return int(h), "raw"
    files = train.files
    probe = [files[int(i)][0] for i in np.linspace(0, len(files) - 1, min(32, len(files)))]
    sizes = [s for s in (probe_size(p, max_pixels, max_bytes) for p in probe) if s is not None]
    if sizes and is_small(max(min(s) for s in sizes)):  # small images: never upscaled
        return int(min(size, max(min(s) for s in sizes))), "raw"
    return int(size), ("raw" if is_small(size) else "jpg")


def _file_labels(files) -> np.ndarray:
    """The labels of a split's files (a FileList holds them as an array already)."""
    if hasattr(files, "labels"):
        return files.labels()
    return np.array([label for _, label in files], np.int64)


def _file_state(path: str) -> bytes:
    """Size and modification time of a source file (one stat): an edited or replaced file changes them."""
    try:
        st = os.stat(path)
    except OSError:  # gone since it was listed: reading it will list it as skipped
        return b"?"
    return f"{st.st_size}:{st.st_mtime_ns}".encode()


def fingerprint(source: Source, settings: dict) -> str:
    """A hash of the source listing and content (or array bytes) and the settings: a rerun must match it.

    The content of a file source is its files' sizes and modification times (one stat per file; for a
    WebDataset source, each shard's and each member's offset and size), so another source with the same
    names, or files edited since an interrupted run, do not match."""
    h = hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=16)
    shards: dict = {}  # a tar shard's state, once for all its members (not one entry per file: memory stays flat)
    for name, split in sorted(source.splits.items()):
        h.update(name.encode())
        if split.files is not None:
            for path, label in split.files:  # names as bytes: any name, UTF-8 or not (a tar member: shard:name)
                h.update(os.fsencode(os.path.relpath(str(path), source.root)) + f"\0{label}\0".encode())
                if isinstance(path, Member):
                    if path.shard not in shards:
                        shards[path.shard] = _file_state(path.shard)
                    h.update(shards[path.shard] + f":{path.offset}:{path.size}\n".encode())
                else:
                    h.update(_file_state(path) + b"\n")
        else:
            h.update(str(split.images.shape).encode())
            h.update(np.ascontiguousarray(split.images).data)
            h.update(np.ascontiguousarray(split.labels).data)
    return h.hexdigest()


# ---------------------------------------------------------------- workers
_SOURCE: Source | None = None
_SETTINGS: dict = {}
_COUNTER = None


def _init_worker(source, settings, counter, in_pool: bool = True) -> None:
    global _SOURCE, _SETTINGS, _COUNTER
    _SOURCE, _SETTINGS, _COUNTER = source, settings, counter
    if not in_pool:
        return
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def _tick(n: int) -> None:
    if _COUNTER is not None and n:
        with _COUNTER.get_lock():
            _COUNTER.value += n


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def decode_jpeg(data: bytes, channels: int) -> np.ndarray:
    """Decode as the loader does (torchvision's libjpeg-turbo): H x W x C uint8."""
    import torch

    return decode_jpegs([torch.frombuffer(bytearray(data), dtype=torch.uint8)], channels)[0].permute(1, 2, 0).numpy()


def _run_task(task: Task) -> tuple[str, int, int, int]:
    source, s = _SOURCE, _SETTINGS
    split = source.splits[task.split]
    out = Path(s["out"])
    side, fmt, channels = s["side"], s["format"], s["channels"]
    writer = ShardWriter(out / shard_name(task.split, task.number))
    stats = PixelStats(side, side, channels) if task.split == "train" else None
    pending: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    done = 0
    try:
        for i in task.ids.tolist():
            key = f"{task.split}_{i:08d}"
            if split.files is not None:
                path, label = split.files[i]
                try:
                    image = load_square(path, side, channels, s["max_pixels"], s["max_image_bytes"])
                except BadImage as e:
                    skipped.append((str(path), str(e)))
                    done += 1
                    continue
            else:
                image, label = split.images[i], int(split.labels[i])
            if fmt == "jpg":
                data = encode_jpeg(image)
                writer.add(key, label, jpg=data)
                stored = decode_jpeg(data, channels) if stats is not None else None
            else:
                writer.add(key, label, array=image)
                stored = image
            if stats is not None:
                pending.append(stored)
                if len(pending) >= 64:
                    stats.add(np.stack(pending))
                    pending.clear()
            done += 1
            if done % 16 == 0:
                _tick(16)
        if stats is not None and pending:
            stats.add(np.stack(pending))
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    _tick(done % 16)
    part = {
        "index": np.array(writer.index, dtype=np.int64).reshape(-1, 3),
        "skipped_path": np.array([p for p, _ in skipped], dtype=str),
        "skipped_reason": np.array([r for _, r in skipped], dtype=str),
    }
    if stats is not None:
        part.update({f"stats_{k}": v for k, v in stats.state().items()})
    atomic_write(out / WORK_DIR / f"{task.split}-{task.number:06d}.npz", lambda f: np.savez(f, **part))
    return task.split, task.number, len(writer.index), len(skipped)


# ---------------------------------------------------------------- driver
def _check_out(out: Path, fp: str, settings: dict, force: bool = False) -> None:
    """Refuse an ``out`` that holds anything but a prepare of this very source (listing, sizes, modification
    times) and settings; ``force``: clear a folder prepare wrote (its own files only, see :func:`_clear`)."""
    plan = out / WORK_DIR / "plan.json"
    if plan.is_file():
        try:
            old = json.loads(plan.read_text())
        except (ValueError, OSError):
            old = {}
        old = old if isinstance(old, dict) else {}
        if old.get("fingerprint") == fp:
            return
        if force:
            _clear(out)
            return
        before = old.get("settings") if isinstance(old.get("settings"), dict) else {}
        diff = sorted(k for k in settings if before.get(k) != settings[k])
        why = (f"{', '.join(diff)} differ" if diff else
               "another source, or this one before it changed: files added, removed, edited or relabelled")
        raise UserError(f"{out} holds a prepare of other data or settings ({why}): choose a new folder, "
                        "or add --force to redo it from scratch")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty (and is not an unfinished prepare): choose another folder"
                        + (" (--force only redoes a folder prepare wrote)" if force else ""))


_OWN_NAME = re.compile(r"^(?:(?:train|val|test)-\d{6}\.tar|(?:train|val|test)\.index\.npy|\..+\.tmp)$")
_OWN_WORK_NAME = re.compile(r"^(?:plan\.json|(?:train|val|test)-\d{6}\.npz|\..+\.tmp)$")


def _clear(out: Path) -> int:
    """Delete what prepare writes in ``out`` (meta.json, stats.npz, skipped.txt, shards, indexes, .prepare/
    and temporaries), nothing else; a link is removed, never followed. How many files went."""
    gone = 0

    def remove(p: Path) -> None:
        nonlocal gone
        if p.is_symlink() or p.is_file():
            p.unlink()
            gone += 1

    work = out / WORK_DIR
    if work.is_symlink():
        remove(work)
    elif work.is_dir():
        for p in work.iterdir():
            if _OWN_WORK_NAME.match(p.name):
                remove(p)
        if not any(work.iterdir()):
            work.rmdir()
    for p in out.iterdir():
        if p.name in (META_FILE, STATS_FILE, SKIPPED_FILE) or _OWN_NAME.match(p.name):
            remove(p)
    return gone


def _warn_empty_classes(source: Source) -> None:
    """One line on stderr naming the classes with no training file or sample (an empty class folder)."""
    train = source.splits["train"]
    labels = train.labels if train.labels is not None else _file_labels(train.files)
    labels = labels[(labels >= 0) & (labels < len(source.classes))]
    empty = np.flatnonzero(np.bincount(labels, minlength=len(source.classes)) == 0)
    if not len(empty):
        return
    names = ", ".join(source.classes[int(i)] for i in empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
    where = " (empty class folders)" if source.kind in ("folder", "ilsvrc2012") else ""
    print(one_line(f"alexnet prepare: warning: {len(empty)} of {len(source.classes)} classes have no training "
                   f"images{where}: {names}")[:600], file=sys.stderr, flush=True)


def _done(out: Path, task: Task) -> bool:
    return (out / shard_name(task.split, task.number)).is_file() and (
        out / WORK_DIR / f"{task.split}-{task.number:06d}.npz").is_file()


def _run_all(tasks, source, settings, workers: int, progress: bool, total: int) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="img", desc="prepare", disable=not progress, dynamic_ncols=True)
    try:
        if workers <= 1 or len(tasks) <= 1:
            counter = mp.Value("q", 0)
            _init_worker(source, settings, counter, in_pool=False)
            for t in tasks:
                _run_task(t)
                bar.update(counter.value - bar.n)
            return
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        counter = ctx.Value("q", 0)
        with ctx.Pool(workers, _init_worker, (source, settings, counter)) as pool:
            result = pool.map_async(_run_task, tasks, chunksize=1)
            while not result.ready():
                result.wait(0.25)
                bar.update(counter.value - bar.n)
            result.get()  # raises a worker's exception here
            bar.update(counter.value - bar.n)
    finally:
        bar.close()


# ---------------------------------------------------------------- torchrun
@dataclass
class _Group:
    """This process's place under torchrun (``world == 1``: a plain single process)."""

    rank: int = 0
    world: int = 1
    local_world: int = 1
    owned: bool = False  # the process group was set up here (and is torn down here)
    agreed: bool = False  # the error being raised is raised by every rank (see _agree)


def _join_group() -> _Group:
    """Join torchrun's process group (gloo: only small Python objects travel) when WORLD_SIZE > 1."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        world = 1
    if world <= 1:
        return _Group()
    import torch.distributed as dist

    owned = False
    if not dist.is_initialized():  # env:// (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)
        # A rank that is done waits for the slowest one (hours on ImageNet), not the default 30 minutes;
        # a rank that dies is not waited for: torchrun stops the others.
        dist.init_process_group(backend="gloo", timeout=datetime.timedelta(hours=PREPARE_TIMEOUT_HOURS))
        owned = True
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return _Group(dist.get_rank(), dist.get_world_size(), max(1, local), owned)


def _gather(group: _Group, obj) -> list:
    """``obj`` of every rank, in rank order (a collective: every rank must call it)."""
    if group.world == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * group.world
    dist.all_gather_object(out, obj)
    return out


def _agree(group: _Group, error: Exception | None) -> None:
    """Every rank reports how its step went; if any failed, every rank stops (none is left at a barrier).

    The rank that failed raises its own error; the others a one-line UserError naming that rank and its error."""
    said = _gather(group, None if error is None else (one_line(str(error)) or type(error).__name__))
    group.agreed = any(m is not None for m in said)
    if error is not None:
        raise error
    for rank, message in enumerate(said):
        if message is not None:
            raise UserError(f"rank {rank} of {group.world} stopped: {message}")


def _attempt(step, *args):
    """``(result, None)`` or ``(None, the Exception)``: an error is agreed on (:func:`_agree`) before it is raised."""
    try:
        return step(*args), None
    except Exception as e:  # noqa: BLE001  (re-raised by _agree on this rank)
        return None, e


def _plan_digest(tasks: list[Task]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for t in tasks:
        h.update(f"{t.split}:{t.number}:{t.start}:{t.stop}\n".encode())
        h.update(np.ascontiguousarray(t.ids, dtype=np.int64).data)
    return h.hexdigest()


def _check_plan_file(out: Path, fp: str, rank: int) -> None:
    """A rank other than 0: the plan rank 0 wrote must be there and be this rank's own (OUT is shared)."""
    try:
        seen = json.loads((out / WORK_DIR / "plan.json").read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        seen = None
    if seen != fp:
        raise UserError(f"rank {rank} does not see the plan rank 0 wrote in {out / WORK_DIR / 'plan.json'}"
                        f"{'' if seen is None else ' (it is of other data or settings)'}: OUT must be one folder "
                        "shared by every rank (a shared filesystem when the ranks run on several machines)")


def prepare(src: str | os.PathLike, out: str | os.PathLike, size: int = 256, workers: int | None = None,
            progress: bool = True, max_pixels: int = MAX_PIXELS, shard_size: int | None = None,
            seed: int = SHUFFLE_SEED, max_image_bytes: int = MAX_IMAGE_BYTES, force: bool = False) -> dict:
    """Prepare ``src`` into ``out`` (see the module docstring); returns a summary dict.

    ``workers``: processes (default: every core; under torchrun, the cores shared among the ranks of a
    machine). ``shard_size``: samples per shard (default: about 64 MB of data per shard). ``seed``: of the
    fixed shuffled order the samples are written in. ``max_image_bytes``:
    a source image file or tar member larger than this is skipped (listed in
    skipped.txt) without being read (:data:`alexnet.data.images.MAX_IMAGE_BYTES`). ``force``: an ``out``
    that holds a prepare of other data or settings is cleared first (only the files prepare writes), not refused.

    Under torchrun (WORLD_SIZE > 1) each rank writes its share of the shards and rank 0 merges (see the
    module docstring); the summary of a rank other than 0 has ``rank`` and its own ``shards`` and ``processed``.

    Classes without a single training file or sample are reported on stderr (one line), not refused.
    """
    group = _join_group()
    in_step = True  # an error outside _agree: the other ranks may be in a collective, not at the last barrier
    try:
        summary = _prepare(group, src, out, size, workers, progress, max_pixels, shard_size, seed, max_image_bytes,
                           force)
        in_step = False
        return summary
    except Exception:
        in_step = not group.agreed  # agreed: raised on every rank alike, they all come to the last barrier
        raise
    finally:
        if group.owned:
            import torch.distributed as dist

            if not in_step:
                try:  # every rank at the end before the group goes: no rank tears it down under another one
                    dist.barrier()
                except Exception:  # noqa: BLE001  (a rank already gone: the error that ended the run is the one shown)
                    pass
            dist.destroy_process_group()


def _make_plan(group: _Group, src, out: Path, size: int, workers, max_pixels: int, shard_size, seed: int,
               max_image_bytes: int):
    """The source, the settings, their fingerprint and the tasks: the same on every rank."""
    if size < 1:
        raise UserError(f"--size must be positive, not {size}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, not {workers}")
    if shard_size is not None and shard_size < 1:
        raise UserError(f"--shard-size must be at least 1, not {shard_size}")
    if max_image_bytes < 1:
        raise UserError(f"--max-image-bytes must be at least 1, not {max_image_bytes}")
    source = open_source(src, max_image_bytes)
    if len(source.classes) < 2:
        raise UserError(f"{source.root} holds {len(source.classes)} class ({', '.join(source.classes)}): "
                        "a classifier needs at least two")
    if group.rank == 0:
        _warn_empty_classes(source)
    side, fmt = choose_side(source, size, max_pixels, max_image_bytes)
    channels = source.channels
    per_shard = int(shard_size) if shard_size else samples_per_shard(fmt, side, channels)
    for name, split in source.splits.items():
        labels = split.labels if split.labels is not None else _file_labels(split.files or [])
        if len(labels) and (labels.min() < 0 or labels.max() >= len(source.classes)):
            raise UserError(f"{source.root}: {name} labels outside 0..{len(source.classes) - 1}")
    settings = {"side": side, "format": fmt, "channels": channels, "per_shard": per_shard, "version": VERSION,
                "max_pixels": int(max_pixels), "max_image_bytes": int(max_image_bytes), "kind": source.kind, "quality": JPEG_QUALITY, "shuffle_seed": int(seed)}
    fp = fingerprint(source, settings)
    tasks = []
    for name, split in source.splits.items():
        order = shuffled_order(len(split), name, seed)
        tasks.extend(Task(name, k, start, min(start + per_shard, len(split)), order[start:start + per_shard])
                     for k, start in enumerate(range(0, len(split), per_shard)))
    return source, settings, fp, tasks


def _write_plan(out: Path, fp: str, settings: dict, force: bool) -> None:
    _check_out(out, fp, settings, force)
    (out / WORK_DIR).mkdir(parents=True, exist_ok=True)
    remove_temporaries(out)
    remove_temporaries(out / WORK_DIR)
    plan = json.dumps({"fingerprint": fp, "settings": settings}).encode()
    atomic_write(out / WORK_DIR / "plan.json", lambda f: f.write(plan))


def _check_complete(out: Path, tasks: list[Task]) -> None:
    """Merge nothing unless every shard of the plan is done: a one-line error naming the missing ones."""
    missing = [shard_name(t.split, t.number) for t in tasks if not _done(out, t)]
    if missing:
        names = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise UserError(f"{len(missing)} of {len(tasks)} shards are not done in {out} ({names}): a rank stopped "
                        "early or does not share OUT; nothing was merged: rerun the same prepare to finish them")


def _prepare(group: _Group, src, out, size, workers, progress, max_pixels, shard_size, seed, max_image_bytes,
             force) -> dict:
    t0 = time.perf_counter()
    out = Path(out)
    rank, world = group.rank, group.world
    made, err = _attempt(_make_plan, group, src, out, size, workers, max_pixels, shard_size, seed, max_image_bytes)
    _agree(group, err)
    source, settings, fp, tasks = made
    if world > 1:
        seen = _gather(group, (fp, _plan_digest(tasks)))
        other = [r for r, s in enumerate(seen) if s != seen[0]]
        group.agreed = bool(other) or world > len(tasks)  # the errors below are raised by every rank
        if other:
            raise UserError(f"rank {other[0]} of {world} sees another source listing or other settings than rank 0 "
                            f"({src}): every rank must read the same SRC with the same options")
        if world > len(tasks):
            raise UserError(f"a prepare under torchrun with {world} ranks but {len(tasks)} shards: run at most "
                            f"{len(tasks)} processes (or a smaller --shard-size)")
    # Only rank 0 checks OUT and writes the plan; the others then check they see that very plan.
    _, err = _attempt(_write_plan, out, fp, settings, force) if rank == 0 else (None, None)
    _agree(group, err)
    _, err = _attempt(_check_plan_file, out, fp, rank) if rank != 0 else (None, None)
    _agree(group, err)  # every rank takes part in each _agree and _gather, in the same order

    mine = tasks[rank::world]  # rank r: shards r, r + W, r + 2W, ... of the plan
    todo = [t for t in mine if not _done(out, t)]
    total = sum(t.stop - t.start for t in todo)
    cores = max(1, default_workers() // group.local_world)
    workers = min(workers or cores, max(1, len(todo)))
    _, err = _attempt(_run_all, todo, source, {**settings, "out": str(out)}, workers, progress and rank == 0, total)
    _agree(group, err)
    counts = _gather(group, (len(todo), total))
    summary = {}
    if rank == 0:
        def finish():
            _check_complete(out, tasks)
            return _finish(source, out, tasks, settings)
        summary, err = _attempt(finish)
    _agree(group, err)
    elapsed = time.perf_counter() - t0
    if rank != 0:
        return {"out": str(out), "rank": rank, "world_size": world, "shards": len(mine),
                "resumed_shards": len(mine) - len(todo), "processed": total, "seconds": elapsed, "workers": workers}
    processed = sum(n for _, n in counts)
    summary.update(seconds=elapsed, resumed_shards=len(tasks) - sum(k for k, _ in counts), processed=processed,
                   images_per_s=processed / elapsed if elapsed > 0 else 0.0, workers=workers, world_size=world)
    return summary


def _finish(source: Source, out: Path, tasks: list[Task], settings: dict) -> dict:
    """Merge the part files into the indexes, skipped.txt, stats.npz and, last, meta.json."""
    skipped = [(name, *entry) for name, split in source.splits.items() for entry in split.skipped]
    counts, shards, stats = {}, {}, None
    for name in source.splits:
        rows = []
        shards[name] = []
        for t in (t for t in tasks if t.split == name):
            with np.load(out / WORK_DIR / f"{name}-{t.number:06d}.npz", allow_pickle=False) as part:
                index = part["index"]
                rows.append(np.column_stack([np.full(len(index), len(shards[name]), np.int64), index]))
                skipped.extend((name, p, r) for p, r in zip(part["skipped_path"].tolist(), part["skipped_reason"].tolist()))
                if name == "train":
                    s = PixelStats.from_state({k[6:]: part[k] for k in part.files if k.startswith("stats_")})
                    if stats is None:
                        stats = s
                    else:
                        stats.merge(s)
            shards[name].append(shard_name(name, t.number))
        index = np.concatenate(rows) if rows else np.zeros((0, 4), np.int64)
        atomic_write(out / f"{name}.index.npy", lambda f: np.save(f, index, allow_pickle=False))
        counts[name] = len(index)
        if name == "train":
            usable = np.unique(index[:, 3])  # classes with at least one usable training image
    listing = "".join(skipped_line(*entry) for entry in skipped).encode()
    atomic_write(out / SKIPPED_FILE, lambda f: f.write(listing))
    if not counts.get("train"):
        raise UserError(f"no usable training images in {source.root} ({len(skipped)} skipped, see {out / SKIPPED_FILE})")
    if len(usable) < 2:
        raise UserError(f"only class {source.classes[int(usable[0])]} has usable training images in {source.root}: "
                        f"a classifier needs at least two ({len(skipped)} skipped, see {out / SKIPPED_FILE})")
    atomic_write(out / STATS_FILE, lambda f: np.savez(f, **stats.finish()))
    meta = {
        "classes": source.classes,
        "class_names": source.class_names,
        "splits": counts,
        "shards": shards,
        "size": settings["side"],
        "channels": settings["channels"],
        "format": settings["format"],
        "source": source.kind,
        "shuffle_seed": settings["shuffle_seed"],
        "version": VERSION,
        "skipped": len(skipped),
        "jpeg_quality": JPEG_QUALITY if settings["format"] == "jpg" else None,
        "written_by": f"alexnet {__version__}",
    }
    text = (json.dumps(meta, indent=1) + "\n").encode()
    atomic_write(out / META_FILE, lambda f: f.write(text))
    return {"out": str(out), "source": source.kind, "splits": counts, "skipped": len(skipped),
            "size": settings["side"], "format": settings["format"], "channels": settings["channels"],
            "classes": len(source.classes)}


def skipped_line(split: str, path: str, reason: str) -> str:
    """One line of skipped.txt: a JSON object ``{"split", "path", "reason"}``, and ``path_hex``
    (the name's bytes) when the name is not valid UTF-8, so any name survives."""
    def text(s: str) -> str:  # undecodable bytes (surrogate escapes) shown as \xNN
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")

    entry = {"split": split, "path": text(path), "reason": text(reason)}
    if entry["path"] != path:
        entry["path_hex"] = os.fsencode(path).hex()
    return json.dumps(entry, ensure_ascii=False) + "\n"


def read_skipped(prepared_dir: str | os.PathLike) -> list[dict]:
    """The entries of a prepared folder's skipped.txt (see :func:`skipped_line`)."""
    path = Path(prepared_dir) / SKIPPED_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
