"""Data sets by URI, loaded into arrays for the trainer.

Supported URIs (``?task=classification|regression`` may follow any file or object
URI to override the guess described under :class:`Dataset`):

- ``file:///abs/path/data.csv``: CSV, comma-separated, an optional header row; the
  label column is ``label_column`` (a header name or a 0-based index), by default the
  last column. Labels that are not numbers are class names.
- ``file:///abs/path/name.npz``: a NumPy archive with arrays ``x`` and ``y``.
- ``file:///abs/path/name_x.npy``: features; the labels are the sibling ``name_y.npy``
  (also ``x.npy`` with ``y.npy``). A URI naming a directory means ``DIR/x.npy`` and
  ``DIR/y.npy``.
- ``file:///abs/path/name.h5`` (or ``.hdf5``): HDF5 with datasets ``x`` and ``y``.
- ``builtin://digits``, ``builtin://iris``, ``builtin://diabetes``: small real data
  sets shipped in ``node/data`` (see its README for sources and licences).
- ``synthetic://classification?n=1000&features=20&classes=2&seed=0`` and
  ``synthetic://regression?n=1000&features=20&targets=1&noise=0.1&seed=0``:
  deterministic, learnable Gaussian data for tests and benchmarks.
- ``nats://NAME``: an object from the dataset bucket, read with ``fetch_object(NAME)``;
  the format follows NAME's extension as above (``NAME_x.npy`` fetches ``NAME_y.npy``
  too). Errors raised by ``fetch_object`` propagate unchanged.

``file://`` paths must be absolute, contain no ``..``, and resolve (symlinks
followed) inside one of the configured data roots. Every problem raises
:class:`DatasetError` naming the URI.

Modules, one idea each: ``dataset`` (the value and the checks every source shares),
``uris`` (parsing a URI), ``loader`` (the scheme picks the source), ``files``
(``file://`` under the data roots), ``formats`` (CSV, NPZ, NPY, HDF5 bytes to arrays),
``objects`` (``nats://``), ``builtin`` and ``synthetic``.
"""

from node.datasets.builtin import BUILTIN
from node.datasets.dataset import Dataset, DatasetError
from node.datasets.loader import load_dataset
from node.datasets.objects import object_names

__all__ = ["BUILTIN", "Dataset", "DatasetError", "load_dataset", "object_names"]
