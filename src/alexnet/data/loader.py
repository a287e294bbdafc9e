"""``make_loader``: batches from the prepared shards, deterministic, DDP-aware.

Reading. Every sample is found through ``<split>.index.npy`` in a
memory-mapped shard: a JPEG is one slice, decoded by libjpeg-turbo (nvJPEG on a
GPU; :func:`alexnet.data.shards.decode_jpegs` on the whole batch); raw samples (small
images) are copied straight out of the mapped file, so a small dataset is held
in memory once, by the page cache, whatever the number of workers.

Order. Training shuffles every epoch with a permutation drawn from
``(seed, epoch)``; evaluation keeps the stored order.

Ranks (``world_size`` W, ``rank`` r):

* training: the ranks share one permutation per epoch, drawn from
  ``(seed, epoch)``, whose first ``W * (N // W)`` samples are cut into
  global batches of ``W * B`` consecutive samples; rank r takes the r-th
  ``B`` of each (what is left after the last whole global batch is cut into
  W equal parts). So W processes at batch B see exactly the global batches
  one process at batch ``W * B`` sees, the ranks read disjoint samples and
  make the same number of batches; the ``N % W`` samples left at the end of
  the permutation sit out that epoch (others next epoch). ``drop_last``, the
  default in training, drops the last partial batch; ``drop_last=False``
  keeps it, of equal size on every rank.
* evaluation: the stored order is cut into W contiguous parts whose sizes
  differ by at most one; every sample is visited exactly once over all
  ranks, with no padding duplicates (ranks may make different numbers of
  batches; the last batch of a rank may be partial).

Randomness. Each sample's crop, flip and lighting are drawn from uniforms
that depend only on ``(seed, epoch, sample id)`` (a counter-based hash,
:func:`sample_uniforms`), so a sample gets the same augmentation whatever
the batch it lands in, the number of processes (DDP training equals one
process with the same global batch), the number of workers or the start
batch. ``set_epoch(e, start_batch=j)`` starts at batch j of epoch e with
exactly the batches an uninterrupted epoch would have made from j on.

Pixels stay uint8 through decoding and the crop; the last step (float,
lighting, minus the mean image or colour, times ``scale / 255``; or
``normalize``) comes after. Decoding and all of that run in one of two
places (``decode``):

* ``"workers"`` (the default for CPU batches): the worker processes
  decode, crop, flip, light and centre, and hand over float batches (written
  into shared memory);
* ``"main"`` (the default with a GPU ``device``): the workers only read the
  compressed bytes (raw samples: their uint8 pixels) and draw the
  augmentation parameters; the main process decodes the batch
  (:func:`alexnet.data.shards.decode_jpegs` on ``device``: batched nvJPEG on
  a GPU) and augments it there, with the same draws and the same code
  (:meth:`_Batches.finish`). On a CUDA device the batches equal the workers'
  up to decoder rounding (and float rounding); on the CPU (``device=None``,
  how the tests run this path without a GPU) they are bitwise the same.

Delivery. With a CUDA ``device`` the batches arrive on it: the DataLoader pins
what the workers hand over, and :func:`prefetch` copies it (``non_blocking``)
and, for ``"main"``, decodes and augments it, up to two batches ahead, in a
background thread on a side CUDA stream, so that this overlaps the training
step; the consumer's stream waits for each batch's event and the batch is
``record_stream``-ed to it. Without a CUDA device nothing of this runs: the
batches pass straight through.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import queue
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from ..errors import UserError
from .meta import is_small, read_meta
from .shards import SPLITMIX_GAMMA, decode_jpegs, device_decode_problem, jpeg_decoder, splitmix64
from .stats import load_stats
from .transforms import EvalTransform, TrainTransform, default_padding


def rank_order(n: int, train: bool, seed: int, epoch: int, rank: int, world_size: int, batch_size: int = 1) -> np.ndarray:
    """The sample ids rank ``rank`` reads in ``epoch``, in order (see the module docstring)."""
    if train:
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        per = n // world_size
        whole = per // batch_size  # global batches of world_size * batch_size
        head = perm[:whole * batch_size * world_size].reshape(whole, world_size, batch_size)[:, rank].ravel()
        tail = perm[whole * batch_size * world_size:per * world_size]
        rest = per - whole * batch_size
        return np.concatenate([head, tail[rank * rest:(rank + 1) * rest]])
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return np.arange(start, start + base + (1 if rank < extra else 0))


def _output(shape: tuple[int, ...], dtype: torch.dtype = torch.float32, shared: bool = True) -> torch.Tensor:
    """An empty batch; in a loader worker (and ``shared``), in shared memory, so handing it over copies
    nothing (as ``default_collate`` does for its batches)."""
    if not shared or torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    numel = int(np.prod(shape))
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel, device="cpu")
    return torch.empty(0, dtype=dtype).new(storage).view(shape)


def unpack(payload) -> list[torch.Tensor]:
    """The JPEGs of a packed batch ``(bytes, offsets)`` as 1-D uint8 views of its one buffer (no copies).

    A batch's JPEGs cross from a worker to the main process as ONE uint8 tensor and the ``B + 1`` offsets
    of its images in it: two shared-memory handles per batch instead of one per image (256 handles and 256
    pinned copies per batch were about 10x slower to hand over, and ran a 512-image batch out of file
    descriptors at ``ulimit -n 1024``). A list (already unpacked) passes through.
    """
    if isinstance(payload, (list, tuple)) and (len(payload) != 2 or not isinstance(payload[1], torch.Tensor)
                                               or payload[1].dtype != torch.int64):
        return list(payload)
    data, offsets = payload
    return list(data.split(offsets.diff().tolist()))


def sample_uniforms(seed: int, epoch: int, ids, count: int) -> torch.Tensor:
    """``len(ids) x count`` float64 uniforms in [0, 1) that depend only on ``(seed, epoch, sample id)``."""
    with np.errstate(over="ignore"):
        key = splitmix64(splitmix64(np.uint64(seed % 2**64)) ^ np.uint64(epoch % 2**64))
        base = splitmix64(key ^ np.asarray(ids, dtype=np.uint64))
        streams = splitmix64(base[:, None] + np.arange(count, dtype=np.uint64)[None, :] * SPLITMIX_GAMMA)
    return torch.from_numpy((streams >> np.uint64(11)).astype(np.float64) * 2.0**-53)


DECODE_CHOICES = ("auto", "cpu", "cuda")  # the config's data.decode


def decode_location(decode: str, device, data_format: str) -> str:
    """The loader's ``decode`` for the config's ``data.decode`` when training on ``device``.

    ``"auto"``: ``"probe"`` (nvJPEG and the augmentation on the GPU, if
    decoding the first batch there works; else the workers, with one warning)
    when training on CUDA from JPEG shards, else ``"workers"``; ``"cpu"``:
    ``"workers"``; ``"cuda"``: ``"main"``, and a one-line UserError unless
    training runs on CUDA (small raw images then have only their augmentation
    moved to the GPU).
    """
    device = torch.device(device)
    if decode == "auto":
        return "probe" if device.type == "cuda" and data_format == "jpg" else "workers"
    if decode == "cpu":
        return "workers"
    if decode == "cuda":
        if not torch.cuda.is_available():
            raise UserError("data.decode: cuda asked for, but CUDA is not available here")
        if device.type != "cuda":
            raise UserError(f"data.decode: cuda needs training on a CUDA device, not {device} (run.device)")
        return "main"
    raise UserError(f"data.decode must be one of {', '.join(DECODE_CHOICES)}, not {decode!r}")


class LoaderFailed(UserError):
    """The loader gave no batch within its timeout (a worker process hung) or a worker process died.

    Not bad input, but the machine's to fix (a hung file system, a worker killed for memory): one line,
    as a :class:`UserError`, instead of a run that waits forever or a traceback.
    """


def _loader_failure(e: RuntimeError) -> LoaderFailed | None:
    """A DataLoader's own error for a hung or dead worker, as one clear line (None for other errors)."""
    text = " ".join(str(e).split())
    if "timed out" in text:
        return LoaderFailed(f"a loader worker gave no batch in time ({text}): it hung; data.workers=0 runs the "
                            f"loading in this process, where a hang can be inspected")
    if "exited unexpectedly" in text or "worker" in text and "killed" in text:
        return LoaderFailed(f"a loader worker process died ({text[:300]}); out of memory is the usual cause: "
                            f"fewer data.workers or a smaller data.batch_size use less")
    return None


DEFAULT_TIMEOUT = 600.0  # s: the longest wait for one batch before a worker counts as hung


class _Failed:
    """An exception of the prefetch thread, raised again in the consumer."""

    def __init__(self, error: BaseException):
        self.error = error


_END = object()


def _tensors(obj) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def prefetch(batches: Iterable, finish: Callable, device: torch.device | None = None, depth: int = 2,
             background: bool | None = None, timeout: float | None = None) -> Iterator:
    """``finish(batch)`` for each of ``batches``, in order; on a CUDA ``device``, ``depth`` batches ahead.

    Without a CUDA device (and ``background`` not set) this is a plain
    ``map``. On CUDA, a thread takes the batches from the DataLoader (pinned
    there), runs ``finish`` on a side stream (its ``non_blocking`` copies,
    decoding and augmentation queue there) and records an event per batch;
    the consumer makes its current stream wait for that event (per batch:
    ``wait_stream`` would also wait for the batches queued after it) and
    ``record_stream``-s the batch's tensors to it, so their memory is not
    reused while the step still reads them. As NVIDIA Apex's and timm's
    prefetchers, with one difference: a thread, not the consumer's own
    ``next()``, issues the work, because torchvision's nvJPEG decode waits on
    the host for its stream and the training loop reads the loss every step,
    so in one thread decoding batch k + 1 and step k would run one after the
    other; those waits release the GIL, so the step's Python runs meanwhile.

    ``background=True`` runs the thread on the CPU too (tests: order, errors,
    an early stop). An exception of ``finish`` or of ``batches`` is raised in
    the consumer; closing the generator (a ``break``) stops and joins the thread.

    ``timeout`` (seconds, None: wait forever): the consumer waits at most
    this long for a batch, then raises :class:`LoaderFailed` (a hung worker
    process or decode, instead of a training run that waits forever); the
    thread is joined at most this long at shutdown, and one that is still
    stuck (in a worker's batch it cannot abandon) is left behind as a daemon,
    with :class:`LoaderFailed` raised unless another error is on its way.
    """
    cuda = device is not None and torch.device(device).type == "cuda"
    if not (cuda if background is None else background):
        for item in batches:
            yield finish(item)
        return
    device = torch.device(device) if cuda else None
    stream = torch.cuda.Stream(device) if cuda else None
    ready: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def work() -> None:
        try:
            if cuda:
                torch.cuda.set_device(device)  # the current device and stream are per thread
                torch.cuda.set_stream(stream)
            for item in batches:
                if stop.is_set():
                    return
                out = finish(item)
                event = None
                if cuda:
                    event = torch.cuda.Event()
                    event.record(stream)
                if not put((out, event)):
                    return
            put(_END)
        except BaseException as e:  # handed to the consumer, which raises it
            put(_Failed(e))

    thread = threading.Thread(target=work, name="alexnet-prefetch", daemon=True)
    thread.start()
    failed = False
    try:
        while True:
            try:
                entry = ready.get(timeout=timeout)
            except queue.Empty:
                failed = True
                stop.set()
                raise LoaderFailed(f"no batch from the loader for {timeout:g} s: a loader worker hung (or the "
                                    f"decode did); data.workers=0 runs the loading in this process, where a "
                                    f"hang can be inspected") from None
            if entry is _END:
                return
            if isinstance(entry, _Failed):
                failed = True
                raise entry.error
            out, event = entry
            if cuda:
                current = torch.cuda.current_stream(device)
                current.wait_event(event)
                for t in _tensors(out):
                    if t.device.type == "cuda":
                        t.record_stream(current)
            yield out
    except BaseException:
        failed = True
        raise
    finally:
        stop.set()
        thread.join(timeout)
        if thread.is_alive() and not failed:
            raise LoaderFailed(f"the loader's prefetch thread did not stop within {timeout:g} s "
                                f"(it waits on a batch that never came: a hung loader worker)")


OPEN_SHARDS = 64  # shard files a reader keeps open (per process)
_PREADV = hasattr(os, "preadv")


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    """``os.preadv`` where the platform lacks it: read, then copy."""
    data = os.pread(fd, len(view), offset)
    view[: len(data)] = data
    return len(data)


class _Batches(torch.utils.data.Dataset):
    """Batch k of an epoch, by key ``(epoch, k)``: read (and, unless ``bytes_only``, finished) in a worker.

    Item: ``(images, labels)``; with ``bytes_only`` (decoding in the main
    process) ``(payload, labels, uniforms)``: the packed compressed bytes (see
    :func:`unpack`) or raw uint8 pixels of :meth:`read`, and the uniforms the
    batch's draws come from (:meth:`draws` turns them into crops, flips and
    lighting in the main process), for :meth:`finish`: a handful of tensors
    per batch, whatever its size.
    """

    def __init__(self, root: Path, meta: dict, split: str, index: np.ndarray, transform, train: bool,
                 batch_size: int, seed: int, rank: int, world_size: int, bytes_only: bool):
        self.root, self.shards, self.split = root, meta["shards"][split], split
        self.n_classes = len(meta["classes"])
        self.format, self.size, self.channels = meta["format"], int(meta["size"]), int(meta.get("channels", 3))
        self.index, self.transform, self.train = index, transform, train
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.bytes_only = bytes_only
        if self.format == "jpg":
            jpeg_decoder()  # chosen and loaded once here: forked workers then start decoding at once
        self._files: collections.OrderedDict[int, io.FileIO] = collections.OrderedDict()
        self._order: tuple[int, np.ndarray] | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_files"], state["_order"] = collections.OrderedDict(), None
        return state

    def order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, rank_order(len(self.index), self.train, self.seed, epoch, self.rank, self.world_size,
                                             self.batch_size))
        return self._order[1]

    def _file(self, shard: int) -> io.FileIO:
        f = self._files.get(shard)
        if f is None:
            if len(self._files) >= OPEN_SHARDS:  # a bounded number open: ImageNet has ~1,300 shards
                self._files.popitem(last=False)[1].close()
            f = self._files[shard] = open(self.root / self.shards[shard], "rb", buffering=0)  # noqa: SIM115
        else:
            self._files.move_to_end(shard)
        return f

    def _read_into(self, dest: np.ndarray, shard: int, offset: int) -> None:
        """Fill ``dest`` (uint8) with the shard's bytes at ``offset``, read with ``pread``.

        Not a memory map: a map's pages stay in the reading process's resident set, so a worker's
        RSS grew by every byte it had read (1.2 GB over 40,000 images of 256 px; tens of GB over
        ImageNet). ``pread`` copies into ``dest`` and leaves the bytes in the page cache only."""
        fd, n, done = self._file(shard).fileno(), dest.nbytes, 0
        view = memoryview(dest).cast("B")
        while done < n:
            got = os.preadv(fd, [view[done:]], offset + done) if _PREADV else _pread_into(fd, view[done:], offset + done)
            if got <= 0:  # the folder was checked when opened: the shard has shrunk since
                raise UserError(f"{self.root / self.shards[shard]}: ends inside a sample ({n} bytes at {offset}); "
                                f"prepare {self.root} again")
            done += got

    def read(self, ids: np.ndarray, shared: bool = False):
        """``(payload, labels)``: the packed JPEG bytes ``(bytes, offsets)``, or a ``B x C x H x W`` uint8 batch.

        ``shared``: in a worker, the payload is written straight into shared memory (it is handed over).
        Every label is checked here, on the CPU, so one out of range is a clear error, never an
        index error in the loss or a device-side assert (the folder's labels were checked when it
        was opened; this guards an index changed since)."""
        rows = self.index[ids]
        labels = rows[:, 3]
        if len(labels) and (labels.min() < 0 or labels.max() >= self.n_classes):
            bad = int(labels[(labels < 0) | (labels >= self.n_classes)][0])
            raise UserError(f"{self.root / (self.split + '.index.npy')}: label {bad} outside 0..{self.n_classes - 1}")
        labels = torch.from_numpy(labels.astype(np.int64))
        if self.format == "jpg":
            sizes = rows[:, 2]
            offsets = np.zeros(len(rows) + 1, np.int64)
            np.cumsum(sizes, out=offsets[1:])
            data = _output((int(offsets[-1]),), torch.uint8, shared)  # shared: handed over as is
            buf = data.numpy()
            for (s, o, n), start in zip(rows[:, :3].tolist(), offsets[:-1].tolist()):
                self._read_into(buf[start:start + n], s, o)
            return (data, torch.from_numpy(offsets)), labels
        out = _output((len(rows), self.channels, self.size, self.size), torch.uint8, shared)
        hwc = out.numpy().reshape(len(rows), self.channels, self.size * self.size)
        sample = np.empty(self.size * self.size * self.channels, np.uint8)
        for j, (s, o, n) in enumerate(rows[:, :3].tolist()):  # stored H x W x C, handed over C x H x W
            if n != sample.nbytes:
                raise UserError(f"{self.root / self.shards[s]}: a sample of {n} bytes at {o}, not "
                                f"{self.size} x {self.size} x {self.channels}; prepare {self.root} again")
            self._read_into(sample, s, o)
            hwc[j] = sample.reshape(self.size * self.size, self.channels).T
        return out, labels

    def uniforms(self, epoch: int, ids: np.ndarray) -> torch.Tensor | None:
        """The uniforms of these samples' training draws: a function of (seed, epoch, sample id) only."""
        if not self.train:
            return None
        return sample_uniforms(self.seed, epoch, ids, self.transform.uniforms_needed(self.channels))

    def draws(self, uniforms: torch.Tensor | None):
        """The crops, flips and lighting of a batch from its :meth:`uniforms` (None for evaluation)."""
        if uniforms is None:
            return None
        return self.transform.sample(len(uniforms), self.size, self.size, uniforms=uniforms)

    def params(self, epoch: int, ids: np.ndarray):
        """The training draws of these samples: a function of (seed, epoch, sample id) only."""
        return self.draws(self.uniforms(epoch, ids))

    def finish(self, payload, params, device: torch.device | None = None, out: torch.Tensor | None = None):
        """The float batch of a :meth:`read` payload: decoded, cut, flipped, lit and centred on ``device``
        (None: the CPU), with the draws ``params``; into ``out`` if given. The one pipeline of both places."""
        if self.format == "jpg":
            images = decode_jpegs(unpack(payload), self.channels, device)  # a list: the training crop is cut from each
            if not self.train:
                images = torch.stack(images)
        else:
            images = payload if device is None else payload.to(device, non_blocking=True)
        if self.train:
            return self.transform.apply(images, params, out)
        return self.transform.apply(images, out)

    def __getitem__(self, key):
        epoch, k = key
        ids = self.order(epoch)[k * self.batch_size:(k + 1) * self.batch_size]
        payload, labels = self.read(ids, shared=self.bytes_only)
        if self.bytes_only:
            return payload, labels, self.uniforms(epoch, ids)
        params = self.params(epoch, ids)
        s = self.transform.crop.size if self.train else self.transform.size
        b, c = len(ids), self.channels
        shape = (b, c, s, s) if self.train or self.transform.tta == "center" else (b, 10, c, s, s)
        return self.finish(payload, params, out=_output(shape)), labels


class _Position:
    """Where the next iteration starts; shared by the loader and its sampler (no reference cycle,
    so a dropped loader shuts its workers down at once instead of at a garbage collection)."""

    def __init__(self, epoch: int, start_batch: int, batches: int):
        self.epoch, self.start_batch, self.batches = epoch, start_batch, batches


class _Keys(torch.utils.data.Sampler):
    """``(epoch, k)`` for the batches of the current epoch, from its start batch."""

    def __init__(self, position: _Position):
        self.position = position

    def __iter__(self):
        p = self.position
        return iter([(p.epoch, k) for k in range(p.start_batch, p.batches)])

    def __len__(self) -> int:
        return max(0, self.position.batches - self.position.start_batch)


@dataclasses.dataclass(frozen=True)
class LoaderSpec:
    """What a :class:`ShardLoader` yields: the split, the batches, the views, the input and the processes.

    The fields are :func:`make_loader`'s arguments, in its order (see there;
    :class:`ShardLoader` unpacks them in this order); the trainer builds one
    from its data config.
    """

    split: str
    batch_size: int
    train: bool = True
    tta: str = "center"
    input_size: int | None = None
    seed: int = 0
    epoch: int = 0
    rank: int = 0
    world_size: int = 1
    num_workers: int = 2
    mean: str = "image"
    lighting: float = 0.1
    drop_last: bool | None = None
    start_batch: int = 0
    device: Any = None
    normalize: dict | None = None
    scale: float = 255.0
    decode: str | None = None
    timeout: float | None = DEFAULT_TIMEOUT


class ShardLoader:
    """An epoch of ``(images, labels)`` batches of the prepared folder ``prepared_dir`` as ``spec`` says;
    see :func:`make_loader` and the module docstring."""

    def __init__(self, prepared_dir, spec: LoaderSpec):
        self.spec = spec
        (split, batch_size, train, tta, input_size, seed, epoch, rank, world_size, num_workers, mean, lighting,
         drop_last, start_batch, device, normalize, scale, decode, timeout) = (getattr(spec, f.name)
                                                                                for f in dataclasses.fields(spec))
        root = Path(prepared_dir)
        self.meta = meta = read_meta(root)
        if split not in meta.get("splits", {}):
            raise UserError(f"{root} has no split {split!r} (splits: {', '.join(meta.get('splits', {}))})")
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, not {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise UserError(f"rank {rank} is not in a world of {world_size}")
        if tta not in ("center", "10crop"):
            raise UserError(f"tta must be 'center' or '10crop', not {tta!r}")
        if mean not in ("image", "rgb"):
            raise UserError(f"mean must be 'image' or 'rgb', not {mean!r}")
        if num_workers < 0:
            raise UserError(f"num_workers must be 0 or more, not {num_workers}")
        if not scale > 0:
            raise UserError(f"scale must be positive, not {scale}")
        try:
            device = None if device is None else torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise UserError(f"unknown device {device!r}: {e}") from None
        if device is not None and device.type == "cpu":
            device = None  # CPU batches: nothing to copy
        if device is not None and device.type == "cuda":
            if not torch.cuda.is_available():
                raise UserError(f"device {device} asked for, but CUDA is not available here")
            if device.index is None:
                device = torch.device("cuda", torch.cuda.current_device())
        if decode is None:
            decode = "workers" if device is None else "main"
        if decode not in ("workers", "main", "probe"):
            raise UserError(f"decode must be 'workers', 'main' or 'probe', not {decode!r}")
        if decode == "probe" and meta["format"] != "jpg":
            decode = "workers" if device is None else "main"  # nothing to decode: raw pixels go where they went
        if timeout is not None and not timeout > 0:
            raise UserError(f"timeout must be positive (seconds) or None, not {timeout}")
        size = int(meta["size"])
        if input_size is None:
            input_size = size if is_small(size) else min(224, size)
        if not 1 <= input_size <= size:
            raise UserError(f"input size {input_size} does not fit the prepared images of {size} px")
        index_path = root / f"{split}.index.npy"  # checked by read_meta (meta.validate_prepared)
        index = np.load(index_path, mmap_mode="r", allow_pickle=False)
        index = np.asarray(index, dtype=np.int64)
        stats = load_stats(root)
        padding = default_padding(size)
        if train:
            transform = TrainTransform(input_size, stats, padding, lighting, mean, normalize, scale=scale)
        else:
            transform = EvalTransform(input_size, stats, tta, padding, mean, normalize, scale)

        self.split, self.train, self.tta, self.input_size = split, train, tta, int(input_size)
        self.batch_size, self.seed, self.rank, self.world_size = int(batch_size), int(seed), int(rank), int(world_size)
        self.drop_last = train if drop_last is None else bool(drop_last)
        self.classes, self.class_names = list(meta["classes"]), list(meta.get("class_names", meta["classes"]))
        self.device, self.decode = device, decode
        self.timeout = None if timeout is None else float(timeout)
        self.num_workers = int(num_workers)
        self.transform = transform
        self._batches = _Batches(root, meta, split, index, transform, train, self.batch_size, self.seed,
                                 self.rank, self.world_size, bytes_only=decode != "workers")
        # prefetch in a thread on a side stream: on CUDA (tests set it to run that code on the CPU)
        self._background = device is not None and device.type == "cuda"
        self._rank_samples = len(rank_order(len(index), train, self.seed, 0, self.rank, self.world_size, self.batch_size))
        self._position = _Position(int(epoch), int(start_batch), len(self))
        self._loader = None
        if train and len(self) == 0:
            raise UserError(f"split {split!r} gives this process {self._rank_samples} samples: "
                            f"fewer than one batch of {batch_size}")

    # ------------------------------------------------------------ sizes
    def __len__(self) -> int:
        """Batches per epoch for this rank (including any skipped by ``start_batch``)."""
        n, b = self._rank_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    @property
    def num_samples(self) -> int:
        """Samples this rank yields per epoch."""
        return len(self) * self.batch_size if self.drop_last else self._rank_samples

    @property
    def epoch(self) -> int:
        return self._position.epoch

    @property
    def start_batch(self) -> int:
        return self._position.start_batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next iteration epoch ``epoch``, starting at its batch ``start_batch``."""
        self._position.epoch, self._position.start_batch = int(epoch), int(start_batch)

    def indices(self, epoch: int | None = None) -> np.ndarray:
        """The sample ids (rows of the split's index) this rank yields in ``epoch``, in order."""
        order = self._batches.order(self.epoch if epoch is None else epoch)
        return order[: self.num_samples]

    # ------------------------------------------------------------ iteration
    @property
    def decoder(self) -> str:
        """What decodes this loader's JPEGs, and where (after the probe of ``decode="probe"``, once iterated)."""
        if self.meta["format"] != "jpg":
            return "none (raw pixels)"
        name = jpeg_decoder().name
        if self.decode == "workers":
            return f"{name} on the CPU, in {self.num_workers or 'no'} worker processes"
        if self.decode == "probe":
            return f"{name}: not probed yet"
        where = self.device if self.device is not None else "the CPU"
        gpu = "nvJPEG, " if self.device is not None and self.device.type == "cuda" and name == "torchvision" else ""
        return f"{gpu}{name} on {where}, in this process"

    def _settle_decode(self) -> None:
        """Before the first batch: ``decode="main"`` must decode on its device (a one-line UserError if not);
        ``"probe"`` decodes the first batch there and falls back to the workers with one warning if it fails."""
        if self.meta["format"] != "jpg" or self.decode == "workers":
            return
        problem = device_decode_problem(self.device if self.device is not None else "cpu")
        if self.decode == "main":
            if problem is not None:
                raise UserError(f"data.decode: cuda: JPEG decoding on {self.device} fails here ({problem}); "
                                f"data.decode=cpu decodes in the loader processes")
            return
        key = str(self.device)
        if key not in _PROBED:
            if problem is None:
                try:
                    ids = self._batches.order(self.epoch)[self.start_batch * self.batch_size:][:self.batch_size]
                    payload, _ = self._batches.read(ids)
                    images = decode_jpegs(unpack(payload), self._batches.channels, self.device)
                    if len(images) != len(ids) or any(x.dtype != torch.uint8 or x.shape[0] != self._batches.channels
                                                      for x in images):
                        problem = "wrong output on the first batch"
                    del images
                except Exception as e:  # no nvJPEG after all, a JPEG it cannot decode, a driver error
                    problem = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            _PROBED[key] = problem
            if problem is not None:
                warnings.warn(f"alexnet: JPEG decoding on {self.device} failed on the first batch ({problem}); "
                              f"decoding on the CPU in the loader processes instead (data.decode=cpu says so "
                              f"without the probe)", RuntimeWarning, stacklevel=3)
        self.decode = "workers" if _PROBED[key] is not None else "main"
        self._batches.bytes_only = self.decode == "main"

    def _dataloader(self):
        if self._loader is None:
            self._settle_decode()
            cuda = self.device is not None and self.device.type == "cuda"
            self._loader = torch.utils.data.DataLoader(
                self._batches, batch_size=None, sampler=_Keys(self._position), num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
                # bytes for the decoder are not pinned (nvJPEG reads them from host memory itself): _finish pins
                # the small tensors of such batches; finished float batches are pinned by the DataLoader
                pin_memory=cuda and self.decode == "workers",
                # no DataLoader timeout: with one it notices a dead worker only when the timeout ends, without one
                # within 5 s; a hung worker is caught by prefetch's timeout (the GPU feeding thread)
                prefetch_factor=2 if self.num_workers > 0 else None,
                # its own generator: starting an iteration must not draw from the global RNG (a resumed run
                # restores that RNG for dropout; the batches' randomness is ours, see sample_uniforms)
                generator=torch.Generator().manual_seed(self.seed))
        return self._loader

    def close(self) -> None:
        """Stop the worker processes now (they also stop when the loader is dropped)."""
        it = getattr(self._loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self._loader = None

    def _abandon(self) -> None:
        """After a hung or dead worker: stop the workers, and close the queue their batches came through, so
        that a prefetch thread still waiting on it gets an error and ends (the DataLoader closes that queue
        itself only when it pins memory)."""
        it = getattr(self._loader, "_iterator", None)
        self.close()
        queue_ = getattr(it, "_worker_result_queue", None)
        if queue_ is not None:
            queue_.close()

    def __iter__(self):
        batches = iter(self._dataloader())  # here, not in a thread: it reads the epoch and start batch now
        if not (self.device is None and self.decode == "workers" and not self._background):
            batches = prefetch(batches, self._finish, self.device, background=self._background, timeout=self.timeout)
        return _clear_failures(batches, self._abandon)

    def _finish(self, item):
        """A batch as the DataLoader hands it over -> ``(images, labels)`` on ``self.device`` (None: the CPU).

        On CUDA the small per-batch tensors (labels, crop positions, flips, lighting coefficients, raw pixels)
        are pinned here and copied ``non_blocking``: a copy from pageable memory would wait for the stream."""
        cuda = self.device is not None and self.device.type == "cuda"
        if self.decode == "main":
            payload, labels, uniforms = item
            params = self._batches.draws(uniforms)
            if cuda:
                params = _pinned(params)
                if isinstance(payload, torch.Tensor):  # raw pixels (JPEG bytes stay as they are, see unpack)
                    payload = payload.pin_memory()
                labels = labels.pin_memory()
            images = self._batches.finish(payload, params, self.device)
        else:
            images, labels = item
            if self.device is not None:
                images = images.to(self.device, non_blocking=True)  # pinned by the DataLoader
        if self.device is not None:
            labels = labels.to(self.device, non_blocking=True)
        return images, labels

    def __repr__(self) -> str:
        return (f"ShardLoader(split={self.split!r}, train={self.train}, batches={len(self)}, batch_size={self.batch_size}, "
                f"input_size={self.input_size}, rank={self.rank}/{self.world_size}, epoch={self.epoch})")


_PROBED: dict[str, str | None] = {}  # device -> why decoding there failed (None: it works), per process


def _pinned(params):
    """A batch's draws (:meth:`_Batches.draws`) in pinned memory, for ``non_blocking`` copies."""
    if params is None:
        return None
    patch = params["patch"]
    patch = dataclasses.replace(patch, top=patch.top.pin_memory(), left=patch.left.pin_memory(),
                                flip=None if patch.flip is None else patch.flip.pin_memory())
    alpha = params["alpha"]
    return {**params, "patch": patch, "alpha": None if alpha is None else alpha.pin_memory()}


def _clear_failures(batches: Iterator, on_failure: Callable[[], None]) -> Iterator:
    """``batches``, with the DataLoader's errors for a hung or dead worker as :class:`LoaderFailed`;
    ``on_failure()`` (shutting the workers down) runs first."""
    try:
        yield from batches
    except LoaderFailed:
        on_failure()
        raise
    except RuntimeError as e:
        failure = _loader_failure(e)
        if failure is None:
            raise
        on_failure()
        raise failure from None


def make_loader(prepared_dir: str | os.PathLike, split: str, batch_size: int, train: bool = True, tta: str = "center",
                input_size: int | None = None, seed: int = 0, epoch: int = 0, rank: int = 0, world_size: int = 1,
                num_workers: int = 2, mean: str = "image", lighting: float = 0.1, drop_last: bool | None = None,
                start_batch: int = 0, device=None, normalize: dict | None = None, scale: float = 255.0,
                decode: str | None = None, timeout: float | None = DEFAULT_TIMEOUT) -> ShardLoader:
    """Batches ``(images float32 B x C x H x W, labels int64 B)`` of ``split`` of a prepared folder.

    ``train``: random crop + flip + PCA lighting (std ``lighting``, 0 for
    none), shuffled per epoch; else the centre patch (``tta="center"``) or
    the ten patches (``"10crop"``: ``B x 10 x C x H x W``). ``input_size``:
    224 for 256 px data, the stored size for small images (``meta.is_small``), which are
    trained with a random crop of the image reflection-padded by size // 8.
    ``mean``: ``"image"`` (the paper's mean image, cut where the crop was) or
    ``"rgb"``; ``scale``: the input is ``(pixel - mean) * scale / 255`` (255:
    the paper's raw pixels minus the mean; 1: [0, 1] units);
    ``normalize={"mean": [...], "std": [...]}`` replaces all that by
    torchvision's ``(x / 255 - mean) / std``. ``device``: where the batches
    arrive (None or ``"cpu"``: the CPU; ``"cuda"``: prefetched there on a side
    stream); ``decode``: ``"workers"`` (the worker processes decode and
    augment) or ``"main"`` (they only read bytes; this process decodes and
    augments on ``device``) or ``"probe"`` (``"main"`` if decoding the first
    batch on ``device`` works, else ``"workers"`` with one warning); default
    ``"main"`` with a GPU ``device``, else ``"workers"``. ``timeout``: seconds
    to wait for one batch before a worker counts as hung (:class:`LoaderFailed`).
    See the module docstring for order, ranks, determinism and where decoding runs.
    """
    return ShardLoader(prepared_dir, LoaderSpec(split, batch_size, train, tta, input_size, seed, epoch, rank, world_size,
                                                num_workers, mean, lighting, drop_last, start_batch, device, normalize,
                                                scale, decode, timeout))
