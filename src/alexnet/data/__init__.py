"""Data: readers, the built-in dataset, prepared shards with statistics, transforms, the loader.

::

    from alexnet import data
    data.generate_synth("synth", size=32, train_per_class=500, val_per_class=100)
    data.prepare("synth", "prepared")            # or an ImageNet folder, ILSVRC-2012, IDX, CIFAR, WebDataset shards
    meta, stats = data.read_meta("prepared"), data.load_stats("prepared")
    loader = data.make_loader("prepared", "train", batch_size=128, train=True)
    for images, labels in loader: ...

Modules, one job each: ``sources`` (what a source folder holds),
``images`` (one file to the square RGB image), ``synth`` (the generated
dataset), ``shards`` (tar shards, their index and order, the JPEG decoder),
``stats`` (mean image, mean colour, PCA), ``prepare`` (all of it into a
prepared folder), ``meta`` (what a prepared folder is: meta.json, the
small-image cut-off), ``transforms`` (augmentation and test patches),
``loader`` (batches). ``matlab`` reads the ILSVRC devkit's meta.mat.
"""

from . import transforms
from .loader import LoaderSpec, ShardLoader, make_loader
from .meta import SMALL_IMAGE_SIDE, eval_resize, is_small, read_meta, validate_prepared
from .prepare import prepare
from .sources import Source, open_source
from .stats import load_stats
from .synth import CLASSES as SYNTH_CLASSES
from .synth import generate_synth
from .transforms import eval_spec, preprocess_image

__all__ = [
    "SMALL_IMAGE_SIDE",
    "SYNTH_CLASSES",
    "LoaderSpec",
    "ShardLoader",
    "Source",
    "eval_resize",
    "eval_spec",
    "generate_synth",
    "is_small",
    "load_stats",
    "make_loader",
    "open_source",
    "prepare",
    "preprocess_image",
    "read_meta",
    "transforms",
    "validate_prepared",
]
