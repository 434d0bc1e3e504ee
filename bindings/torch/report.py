"""What :func:`~layertrim.bindings.torch.prune` did, layer by layer."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class LayerReport:
    """One pruned layer.

    ``rel_error`` is ``||X W + 1 b^T - Y||_F / ||Y||_F`` on the calibration
    rows, with ``X`` the layer inputs used by the solver (pruned inputs in the
    cascade scheme) and ``Y`` the dense network's layer output;
    ``error_kind`` says whether ``Y`` is the pre-activation (``"linear"``) or
    the post-ReLU output with ``relu`` applied to the prediction too
    (``"relu"``). ``status`` is the worst solver status over the layer's
    groups; ``iterations`` their sum; ``info`` the solver facts (lam, eps, ...).
    """

    name: str
    method: str
    shape: tuple
    zeros: int
    total: int
    rel_error: float
    error_kind: str
    status: str
    iterations: int
    time: float
    info: dict = field(default_factory=dict)

    @property
    def sparsity(self) -> float:
        return self.zeros / self.total if self.total else 0.0


@dataclass(frozen=True)
class PruneReport:
    """Per-layer :class:`LayerReport` s plus the run's settings and totals.

    ``skipped`` maps layers left unchanged to the reason (e.g. a weight tied
    to another module). ``engine`` holds the cost facts of the run:
    ``chain_blocks`` (blocks run from cached inputs), ``network_passes``
    (captures over the whole network), ``cache_bytes`` (peak bytes of
    cached block inputs) and ``target_bytes`` (peak bytes of one block's
    layer outputs kept as targets), see :mod:`.cascade`.
    """

    layers: list
    scheme: str
    time: float
    skipped: dict = field(default_factory=dict)
    engine: dict = field(default_factory=dict)

    @property
    def zeros(self) -> int:
        return sum(r.zeros for r in self.layers)

    @property
    def total(self) -> int:
        return sum(r.total for r in self.layers)

    @property
    def sparsity(self) -> float:
        """Fraction of zero weights over the pruned layers."""
        return self.zeros / self.total if self.total else 0.0

    def __getitem__(self, name: str) -> LayerReport:
        for r in self.layers:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict:
        """Plain-data form (lists, numbers, strings) of the report."""
        layers = []
        for r in self.layers:
            d = asdict(r)
            d["shape"] = list(r.shape)
            d["sparsity"] = r.sparsity
            d["info"] = {k: _plain(v) for k, v in r.info.items()}
            layers.append(d)
        return {
            "scheme": self.scheme,
            "time": self.time,
            "zeros": self.zeros,
            "total": self.total,
            "sparsity": self.sparsity,
            "layers": layers,
            "skipped": dict(self.skipped),
            "engine": dict(self.engine),
        }

    def to_json(self, **kwargs) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), **kwargs)

    def __str__(self) -> str:
        head = ("layer", "method", "shape", "sparsity", "rel.err", "status", "iters", "time[s]")
        rows = [
            (
                r.name, r.method, "x".join(map(str, r.shape)), f"{r.sparsity:.4f}",
                f"{r.rel_error:.4f}" + ("*" if r.error_kind == "relu" else ""), r.status,
                str(r.iterations), f"{r.time:.2f}",
            )
            for r in self.layers
        ]
        rows.append(("total", self.scheme, str(self.total), f"{self.sparsity:.4f}", "", "", "", f"{self.time:.2f}"))
        widths = [max(len(row[i]) for row in [head] + rows) for i in range(len(head))]
        left = {0, 1, 2, 5}

        def fmt(row):
            return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

        lines = [fmt(head), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]
        if any(r.error_kind == "relu" for r in self.layers):
            lines.append("* error of the post-ReLU output")
        lines += [f"skipped {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


def _plain(v):
    """JSON-able version of a solver info value."""
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return repr(v)
