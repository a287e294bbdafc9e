"""``alexnet train --config RECIPE.yaml --data PREPARED --out RUN_DIR [--set k=v ...] [--resume | --force]``.

``--resume`` continues the run in RUN_DIR; ``--force`` starts afresh over
another run there (without either, a folder with a run's files is refused).
One run at a time per folder: a second one is refused, naming the first's pid.

``--data`` may be left out when the config names the folder (``data.path``, as
every run's ``config.yaml`` does): ``--config RUN/config.yaml`` reruns a run.
"""

from __future__ import annotations

import os

from ..errors import UserError
from ..strict_json import dumps
from . import add_device_flag, add_progress_flag, device_override, show_progress


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model with a recipe (also under torchrun for DDP)",
                       description="Train with a YAML recipe on a prepared data folder. Under "
                                   "`torchrun --nproc-per-node N` the same command trains with DDP.")
    p.add_argument("--config", default=None, help="recipe: a YAML file, or a shipped name (paper, demo, fashion-mnist)")
    p.add_argument("--data", default=None,
                   help="prepared data folder (alexnet prepare); default: the config's data.path, which every "
                        "run's config.yaml records")
    p.add_argument("--out", required=True, help="run folder to write (config.yaml, metrics.jsonl, last/best.ckpt)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config key; repeatable, e.g. --set optim.lr=0.02")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.ckpt")
    p.add_argument("--force", action="store_true",
                   help="start afresh in an --out that holds another run: its metrics.jsonl, last.ckpt and "
                        "best.ckpt are deleted and config.yaml is overwritten (other files are left alone)")
    add_device_flag(p, run_config=True)
    add_progress_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data import read_meta
    from ..engine.config import load_config
    from ..engine.distributed import shutdown
    from ..engine.trainer import fit
    from ..fileio import check_output_dir

    cfg = load_config(args.config, device_override(args))
    args.data = args.data or cfg.data.path
    if not args.data:
        raise UserError("no data: pass --data PREPARED (or set data.path in the config)")
    meta = read_meta(args.data)
    if len(meta.get("classes", [])) < 2:
        raise UserError(f"{args.data} holds {len(meta.get('classes', []))} class(es): a classifier needs at least two")
    check_output_dir(args.out, "run folder")
    try:  # the trainer locks --out and clears a write a kill cut short (rank 0)
        result = fit(cfg, args.data, args.out, resume=args.resume, progress=show_progress(args),
                     epoch_lines=not args.no_progress, force=args.force)  # into a log: no bars, one line per epoch
    finally:
        shutdown()
    if int(os.environ.get("RANK", "0")) == 0:
        print(dumps({k: v for k, v in result.items() if k != "last"}))
    return 0
