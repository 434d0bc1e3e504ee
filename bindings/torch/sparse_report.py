"""The per-layer decisions of :func:`.sparse_inference.to_sparse` and the report that prints them."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LayerDecision:
    """One layer: its shape, sparsity, the layout chosen (``"dense"`` when none is faster), timings."""

    name: str
    shape: tuple
    sparsity: float
    decision: str
    timings: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def speedup(self, batch: int) -> float | None:
        t = self.timings.get(batch, {})
        return None if self.decision == "dense" else t["dense"] / t[self.decision]


@dataclass
class SparseInferenceReport:
    """Every candidate layer's decision, messages (skipped layouts), and the runs of modules fused
    for batch 1 (each a list of dotted names; :mod:`.sparse_chain`)."""

    layers: list
    notes: list
    fused: list = field(default_factory=list)

    def __str__(self) -> str:
        batches = sorted({b for d in self.layers for b in d.timings})
        head = f"{'layer':<24}{'shape':>14}{'sparsity':>9}{'layout':>7}" + "".join(
            f"{'dense/sp b=' + str(b):>15}" for b in batches)
        rows = [head, "-" * len(head)]
        for d in self.layers:
            cells = ""
            for b in batches:
                t = d.timings.get(b, {})
                best = min((v for k, v in t.items() if k != "dense"), default=None)
                cells += f"{(t['dense'] / best if best else float('nan')):>14.2f}x"
            rows.append(f"{d.name:<24}{'x'.join(map(str, d.shape)):>14}{d.sparsity:>9.3f}{d.decision:>7}{cells}")
        return "\n".join(rows + list(self.notes))
