"""What the network learned, as numbers: features and retrieval.

* :mod:`~alexnet.features.extract`: activations of any layer (fc7 by
  default) for a prepared split (:func:`extract_features`);
* :mod:`~alexnet.features.store`: their files, a memory-mapped ``.npy`` with
  labels, ids and a description beside it (:func:`read_features`);
* :mod:`~alexnet.features.cache`: the same, cached beside the checkpoint
  (:func:`cached_features`);
* :mod:`~alexnet.features.knn`: exact batched Euclidean k-nearest-neighbour
  search (:func:`knn_search`) and the fc7-against-pixels kNN evaluation
  (:func:`evaluate_knn`);
* :mod:`~alexnet.features.neighbors`: nearest training images of image files
  or split images (the paper's Figure 4).

Prediction and evaluation of a checkpoint are :mod:`alexnet.engine.predict`
and :mod:`alexnet.engine.evaluate`; the loaded checkpoint all of them share is
:class:`alexnet.engine.inference.Checkpoint`.
"""

from .cache import cached_features
from .extract import extract_features
from .knn import evaluate_knn, format_evaluation, knn_search
from .neighbors import find_neighbors
from .store import FeatureSet, read_features

__all__ = [
    "FeatureSet",
    "cached_features",
    "evaluate_knn",
    "extract_features",
    "find_neighbors",
    "format_evaluation",
    "knn_search",
    "read_features",
]
