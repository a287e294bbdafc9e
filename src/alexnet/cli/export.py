"""``alexnet export CKPT --format safetensors|onnx|torchscript|torch-export --out FILE [--force]``
(safetensors: FILE and config.json beside it)."""

from __future__ import annotations


def add_parser(sub) -> None:
    from ..interop.export import FORMATS

    p = sub.add_parser("export", help="write a checkpoint as safetensors, ONNX, TorchScript or a torch.export program",
                       description="Write a checkpoint for deployment. Each file carries the model name and "
                                   "options, the classes and their names, and the eval transform with the mean image "
                                   "or mean/std (safetensors metadata, ONNX metadata_props, TorchScript and "
                                   "torch.export extra files). safetensors also writes config.json beside OUT (the "
                                   "same, plus timm's pretrained_cfg; the mean image is the tensor 'mean_image' of "
                                   "OUT): export each model into its own folder. Programs take batch x C x crop x crop "
                                   "float32 images and return logits without alexnet installed (ONNX: LRN is ONNX's "
                                   "LRN per tower, alpha scaled to its alpha/size form). A .safetensors written here "
                                   "is accepted wherever a checkpoint is.")
    p.add_argument("checkpoint", help="checkpoint file (e.g. RUN/best.ckpt)")
    p.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    p.add_argument("--out", required=True, help="file to write (refused if it exists, unless --force): "
                                                "*.safetensors for safetensors; name a torch-export program *.pt2, "
                                                "as torch.export.load expects")
    p.add_argument("--force", action="store_true", help="replace an existing OUT (and its config.json)")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from ..interop.export import export_checkpoint, written_files
    from ..fileio import check_output_file

    files = written_files(args.format, args.out)
    for path in files:
        check_output_file(path, "export", overwrite=args.force)
    meta = export_checkpoint(args.checkpoint, args.format, args.out)
    model = json.loads(meta["model"])
    print(f"wrote {' and '.join(map(str, files))}: {args.format}, {model['name']}, "
          f"{len(json.loads(meta['classes']))} classes, input {json.loads(meta['input'])['shape']}")
    return 0
