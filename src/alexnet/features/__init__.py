"""What the network learned, as numbers: features, retrieval, prediction.

* :mod:`~alexnet.features.extract`: activations of any layer (fc7 by
  default) for a prepared split, as a memory-mapped ``.npy`` with labels and
  ids beside it, cached beside the checkpoint (:func:`cached_features`);
* :mod:`~alexnet.features.knn`: exact batched Euclidean k-nearest-neighbour
  search (:func:`knn_search`) and the fc7-against-pixels kNN evaluation
  (:func:`evaluate_knn`);
* :mod:`~alexnet.features.neighbors`: nearest training images of image files
  or split images (the paper's Figure 4);
* :mod:`~alexnet.features.predict`: class probabilities of image files, and
  the confusion matrix of a split.
"""

from .extract import FeatureSet, cached_features, extract_features, read_features
from .knn import evaluate_knn, format_evaluation, knn_search
from .neighbors import find_neighbors
from .predict import confusion_matrix, predict

__all__ = [
    "FeatureSet",
    "cached_features",
    "confusion_matrix",
    "evaluate_knn",
    "extract_features",
    "find_neighbors",
    "format_evaluation",
    "knn_search",
    "predict",
    "read_features",
]
