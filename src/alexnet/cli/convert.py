"""``alexnet convert torchvision WEIGHTS OUT.ckpt`` and ``alexnet convert caffe DEPLOY WEIGHTS OUT.ckpt``:
checkpoints from other libraries' weights."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="make a checkpoint from torchvision or Caffe AlexNet weights",
                       description="Wrap weights trained elsewhere as an alexnet checkpoint that carries "
                                   "their own eval transform and class names.")
    sources = p.add_subparsers(dest="source", metavar="SOURCE")
    tv = sources.add_parser("torchvision", help="torchvision's alexnet weights -> an alexnet-owt checkpoint",
                            description="A torchvision AlexNet state dict (.pth or .safetensors) becomes an alexnet-owt "
                                        "checkpoint with torchvision's eval transform and the ILSVRC-2012 synsets.")
    tv.add_argument("weights", help="the weights file (.pth state dict or .safetensors)")
    tv.add_argument("out", help="checkpoint to write (refused if it exists, unless --force)")
    tv.add_argument("--force", action="store_true", help="replace an existing OUT")
    tv.set_defaults(func=run_torchvision)
    caffe = sources.add_parser(
        "caffe", help="Caffe's bvlc_alexnet (deploy.prototxt + .caffemodel) -> an alexnet-caffe checkpoint",
        description="Reads the prototxt and caffemodel without Caffe. The net must be bvlc_alexnet's (any class count); "
                    "BGR input order is folded into conv1, the mean into the checkpoint's eval transform.")
    caffe.add_argument("prototxt", help="the net definition (deploy.prototxt)")
    caffe.add_argument("weights", help="the trained weights (.caffemodel)")
    caffe.add_argument("out", help="checkpoint to write (refused if it exists, unless --force)")
    caffe.add_argument("--synsets", metavar="FILE",
                       help="class ids and names, one line per output: 'n01440764 tench, Tinca tinca' "
                            "(Caffe's synset_words.txt; default for 1000 outputs: the ILSVRC-2012 synsets)")
    caffe.add_argument("--mean", metavar="FILE|B,G,R",
                       help="the mean Caffe subtracted: a .binaryproto mean image, or per-channel values in Caffe's "
                            "B,G,R order (default: the prototxt's mean_value, else 104,117,123)")
    caffe.add_argument("--force", action="store_true", help="replace an existing OUT")
    caffe.set_defaults(func=run_caffe)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_torchvision(args) -> int:
    from ..interop.convert import convert_torchvision
    from ..fileio import check_output_file

    check_output_file(args.out, "checkpoint", overwrite=args.force)
    ckpt = convert_torchvision(args.weights, args.out)
    print(f"wrote {args.out}: {ckpt['model']['name']}, {len(ckpt['classes'])} classes, eval transform {ckpt['eval_transform']}")
    return 0


def run_caffe(args) -> int:
    from ..interop.caffe import convert_caffe
    from ..fileio import check_output_file

    check_output_file(args.out, "checkpoint", overwrite=args.force)
    ckpt = convert_caffe(args.prototxt, args.weights, args.out, synsets=args.synsets, mean=args.mean)
    spec = ckpt["eval_transform"]
    rgb = ",".join(f"{v:.1f}" for v in ckpt["data_stats"]["mean_rgb"].tolist())
    kind = "mean image" if spec["mean"] == "image" else "mean colour"
    print(f"wrote {args.out}: {ckpt['model']['name']}, {len(ckpt['classes'])} classes, {spec['crop']} px crop of "
          f"{spec['resize']} px, raw pixels minus the {kind} (R,G,B {rgb}); conv1 takes R,G,B")
    return 0
