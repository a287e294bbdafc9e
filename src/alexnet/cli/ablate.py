"""``alexnet ablate --data PREPARED --study NAME|all [--seeds N] [--epochs E] [--out DIR]``.

Reruns the paper's claims (relu-vs-tanh, lrn, pooling, dropout, pca,
bias-init, towers) with everything else fixed, over several seeds, and writes
``OUT/STUDY/table.md`` (mean +- std), ``summary.json`` and ``curves.png``.
Every run has its own folder: run the same command again after an
interruption and it continues where it stopped. A run another study in the
same ``--out`` already made (the base recipe is the first arm of five
studies) is reused, not trained again.
"""

from __future__ import annotations

from . import add_device_flag, add_progress_flag, device_override, show_progress

# Epochs per run when --epochs is not given: the activation study stops early (it measures the
# time to 25% training error); the others compare val error after a short, fixed schedule.
DEFAULT_EPOCHS = {"relu-vs-tanh": 2}
DEFAULT_BASE_EPOCHS = 5


def add_parser(sub) -> None:
    from ..ablation import NAMES

    p = sub.add_parser("ablate", help="rerun the paper's ablations (ReLU, LRN, pooling, dropout, ...) over seeds",
                       description="Train each arm of a study with the same recipe and seeds, then write a "
                                   "Markdown table (mean +- std over seeds) and a figure. Resumable.")
    p.add_argument("--data", required=True, help="prepared data folder (alexnet prepare), e.g. Fashion-MNIST")
    p.add_argument("--study", required=True, choices=[*NAMES, "all"], metavar="STUDY",
                   help=f"one of: {', '.join(NAMES)}, all")
    p.add_argument("--config", default="ablate",
                   help="base recipe every arm starts from (default: the shipped 'ablate' recipe)")
    p.add_argument("--seeds", type=_positive, default=3, help="seeds per arm (0..N-1; default 3)")
    p.add_argument("--epochs", type=_positive, default=None,
                   help=f"epochs per run (default {DEFAULT_BASE_EPOCHS}; relu-vs-tanh "
                        f"{DEFAULT_EPOCHS['relu-vs-tanh']})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a key of the base recipe for every arm; repeatable")
    p.add_argument("--out", default="ablations", help="output folder (default: ./ablations)")
    add_device_flag(p, run_config=True)
    add_progress_flag(p)
    p.set_defaults(func=run)


def _positive(text: str) -> int:
    import argparse

    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def run(args) -> int:
    from ..ablation import resolve, run_study, write_outputs
    from ..data import read_meta
    from ..engine.config import load_config
    from ..errors import UserError
    from ..fileio import check_output_dir

    read_meta(args.data)  # a missing or unprepared folder: one line, before any training
    args.overrides = device_override(args)
    load_config(args.config, args.overrides)  # a bad recipe or --set: one line, before any training
    check_output_dir(args.out, "ablation folder")
    for study in resolve(args.study):
        epochs = args.epochs or DEFAULT_EPOCHS.get(study.name)
        rows = run_study(study, args.data, args.out, config=args.config, seeds=args.seeds, epochs=epochs,
                         overrides=args.overrides, bars=show_progress(args), announce=not args.no_progress)
        if not rows:
            raise UserError(f"study {study.name}: no run finished")
        paths = write_outputs(study, rows, args.out)
        print(paths["table"].read_text())
        print(f"wrote {paths['table']}, {paths['summary']}, {paths['figure']}")
    return 0
