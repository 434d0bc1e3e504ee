"""The module that multiplies with a sparse weight: :class:`SparseLinear` (CSR, BSR or 2:4).

``y = x W^T + b`` for a Linear layer, or a strided 1x1 convolution, with ``W``
held as a ``torch.sparse`` CSR/BSR tensor (BSR with the largest square block
of :data:`BLOCKS` that divides the shape) or, on CUDA, as a 2:4
semi-structured tensor. One sample through a CSR weight on the CPU goes
through the compiled kernel of :mod:`.csr_kernel`.
:func:`.sparse_inference.to_sparse` decides where the module is used.
"""
from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from torch import nn

from .csr_kernel import kernel_arrays, sparse_matvec

BLOCKS = (32, 16, 8, 4)


def _sparsify(w: torch.Tensor, layout: str) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR tensor support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return _sparsify_now(w, layout)


def _sparsify_now(w: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "csr":
        return w.to_sparse_csr()
    if layout == "bsr":
        block = next(b for b in BLOCKS if w.shape[0] % b == 0 and w.shape[1] % b == 0)
        return w.to_sparse_bsr((block, block))
    return torch.sparse.to_sparse_semi_structured(w)


class SparseLinear(nn.Module):
    """``y = x W^T + b`` with a sparse ``W (out, in)``; also a strided 1x1 convolution (``conv_stride``).

    ``decision`` is the chosen layout, ``timings`` maps batch size to
    ``{"dense": seconds, layout: seconds, ...}`` as measured by :func:`to_sparse`.
    """

    def __init__(self, weight: torch.Tensor, bias, layout: str, conv_stride=None):
        super().__init__()
        self.layout = layout
        self.out_features, self.in_features = weight.shape
        self.conv_stride = None if conv_stride is None else tuple(conv_stride)
        self.register_buffer("weight", _sparsify(weight, layout) if layout != "2:4" else weight)
        self._semi = _sparsify(weight, layout) if layout == "2:4" else None
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.decision, self.timings = layout, {}
        self._vector = layout == "csr" and self.conv_stride is None  # one sample: the matrix-vector path
        self._arrays = self._arrays_of = self._bias_of = None

    def __deepcopy__(self, memo):
        """A copy built from the dense weight (torch cannot deep-copy the storage of a CSR/BSR tensor)."""
        dense = self.weight.to_dense() if self.weight.layout != torch.strided else self.weight
        bias = None if self.bias is None else self.bias.detach().clone()
        new = SparseLinear(dense.detach().clone(), bias, self.layout, self.conv_stride)
        new.decision, new.timings = self.decision, copy.deepcopy(self.timings, memo)
        new.train(self.training)
        memo[id(self)] = new
        return new

    def _kernel_arrays(self):
        """The numpy arrays :func:`.csr_kernel.sparse_matvec` reads, rebuilt when a buffer is
        replaced (``.to()``, ``load_state_dict``); ``None`` where the kernel does not run."""
        weight, bias = self._buffers["weight"], self._buffers["bias"]
        if self._arrays_of is not weight or self._bias_of is not bias:
            self._arrays, self._arrays_of, self._bias_of = kernel_arrays(weight, bias), weight, bias
        return self._arrays

    def holds(self, arrays) -> bool:
        """Whether ``arrays`` are still this layer's kernel arrays (no buffer replaced or loaded since)."""
        return (arrays is self._arrays and self._arrays_of is self._buffers["weight"]
                and self._bias_of is self._buffers["bias"])

    def _one_sample(self, x: torch.Tensor) -> torch.Tensor:
        """``W x + b`` for one sample with few Python steps (at batch 1 the per-call overhead is of
        the order of the product itself): the compiled kernel (by rows, or by the columns of the
        nonzero inputs) on CPU tensors that need no gradient, torch's CSR product otherwise."""
        arrays = self._kernel_arrays() if x.is_cpu and not x.requires_grad else None
        if arrays is not None and x.dtype == arrays.dtype:
            out = np.empty(self.out_features, arrays.data.dtype)
            sparse_matvec(*arrays[:6], x.numpy().reshape(-1), arrays.bias, out)
            # a numpy reshape: torch's view with a computed size costs several microseconds more
            return torch.from_numpy(out[None] if x.dim() == 2 else out.reshape(x.shape[:-1] + out.shape))
        weight, bias = self._buffers["weight"], self._buffers["bias"]
        y = torch.mv(weight, x.reshape(-1)) if bias is None else torch.addmv(bias, weight, x.reshape(-1))
        return y.view(x.shape[:-1] + (self.out_features,))

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._arrays = self._arrays_of = self._bias_of = None  # values may sit in new storage

    def __getstate__(self):
        return {**self.__dict__, "_arrays": None, "_arrays_of": None, "_bias_of": None}

    def _matmul(self, x2: torch.Tensor) -> torch.Tensor:
        """``W @ x2`` for ``x2 (in, n)``."""
        if self._semi is not None:
            return (x2.T @ self._semi.T).T
        if x2.shape[1] == 1 and self.layout == "csr":  # one sample: the CSR matrix-vector kernel
            return torch.mv(self.weight, x2[:, 0]).unsqueeze(1)
        return torch.mm(self.weight, x2.contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._vector and x.numel() == self.in_features:
            return self._one_sample(x)
        if self.conv_stride is None:
            lead = x.shape[:-1]
            y = self._matmul(x.reshape(-1, self.in_features).T).T
            if self.bias is not None:
                y = y + self.bias
            return y.reshape(*lead, self.out_features)
        sh, sw = self.conv_stride
        x = x[..., ::sh, ::sw]
        B, C, H, W = x.shape
        y = self._matmul(x.transpose(0, 1).reshape(C, -1)).reshape(self.out_features, B, H, W).transpose(0, 1)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y.contiguous()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, layout={self.layout}"
