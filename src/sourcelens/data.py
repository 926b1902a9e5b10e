"""PyTorch Datasets over sourcelens HDF5 files (stamps, lensing pairs; any file through H5ArrayDataset).

Files are opened lazily in each worker process (safe with ``DataLoader(num_workers>0)``);
items are float32 tensors with a leading channel axis, (1, H, W).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from .io import open_h5, read_meta, reading_h5


class H5ArrayDataset(Dataset):
    """Items are tuples of rows of the named arrays of one HDF5 file.

    ``inputs`` and ``targets`` name arrays (e.g. ``"lensed"`` and ``("source",)``); image arrays
    (N, H, W) become (1, H, W) tensors, vector arrays (N, K) become (K,) tensors. A file that is
    corrupt or lacks one of the arrays raises :class:`sourcelens.io.DatasetError` (a ValueError).
    """

    def __init__(self, path: str | Path, inputs: str | Sequence[str], targets: str | Sequence[str] = (),
                 transform: Callable[[tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]] | None = None):
        self.path = Path(path)
        self.names = tuple([inputs] if isinstance(inputs, str) else inputs) + tuple(
            [targets] if isinstance(targets, str) else targets)
        self.transform = transform
        with reading_h5(self.path, arrays=self.names) as fh:   # DatasetError if corrupt or an array is missing
            self._len = int(fh[self.names[0]].shape[0])
        self._fh: h5py.File | None = None
        self._meta = None

    @property
    def meta(self):
        """The metadata table (pandas DataFrame), read on first use."""
        if self._meta is None:
            self._meta = read_meta(self.path)
        return self._meta

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        if self._fh is None:
            self._fh = open_h5(self.path, arrays=self.names)
        out = []
        for name in self.names:
            arr = torch.from_numpy(np.asarray(self._fh[name][index], dtype=np.float32))
            out.append(arr.unsqueeze(0) if arr.ndim == 2 else arr)
        item = tuple(out)
        return self.transform(item) if self.transform else item

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fh"] = None
        return state


def StampsDataset(path: str | Path, **kw) -> H5ArrayDataset:
    """Galaxy stamps: items are ``(image,)``."""
    return H5ArrayDataset(path, "images", **kw)


def PairsDataset(path: str | Path, inputs: str = "lensed",
                 targets: str | Sequence[str] = ("source", "lens_params"), **kw) -> H5ArrayDataset:
    """Lensed/unlensed pairs: by default items are ``(lensed, source, lens_params)``."""
    return H5ArrayDataset(path, inputs, targets, **kw)
