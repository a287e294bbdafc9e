"""``alexnet convert torchvision WEIGHTS OUT.ckpt``: checkpoints from other libraries' weights."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="make a checkpoint from torchvision AlexNet weights",
                       description="Wrap weights trained elsewhere as an alexnet checkpoint that carries "
                                   "their own eval transform and class names.")
    p.add_argument("source", choices=("torchvision",), help="where the weights come from")
    p.add_argument("weights", help="the weights file (.pth state dict or .safetensors)")
    p.add_argument("out", help="checkpoint to write (refused if it exists, unless --force)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..engine.convert import convert_torchvision
    from ..fileio import check_output_file

    check_output_file(args.out, "checkpoint", overwrite=args.force)
    ckpt = convert_torchvision(args.weights, args.out)
    print(f"wrote {args.out}: {ckpt['model']['name']}, {len(ckpt['classes'])} classes, eval transform {ckpt['eval_transform']}")
    return 0
