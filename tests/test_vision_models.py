"""torchvision's ResNet-18 and MobileNetV2 and a timm ViT (random init, 32x32 images):
every targeted layer reaches its sparsity, N:M misfits are left dense and named,
the outputs stay finite, and the benchmarks' stand-ins have torchvision's layers."""
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("timm")
from torch import nn  # noqa: E402

from layertrim.bindings.torch import prune  # noqa: E402
from layertrim.bindings.torch.examples.vision import timm_model, torchvision_model  # noqa: E402
from seeding import torch_generator, torch_seed  # noqa: E402


def images(seed, n=2, batch=8):
    gen = torch_generator(seed)
    return [torch.randn(batch, 3, 32, 32, generator=gen) for _ in range(n)]


def _weights(model, names):
    modules = dict(model.named_modules())
    return {n: modules[n].weight for n in names}


@pytest.mark.parametrize("name, kwargs, method, pattern", [
    ("resnet18", {"num_classes": 10}, "magnitude", "unstructured"),
    ("mobilenet_v2", {"num_classes": 10, "width_mult": 0.25}, "iht", "2:4"),
])
def test_torchvision_models_reach_sparsity(name, kwargs, method, pattern, seed):
    with torch_seed(seed):
        model = torchvision_model(name, **kwargs)
    report = prune(model, images(seed), method=method, sparsity=0.5, pattern=pattern, refit=False, progress=False)
    prunable = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    pruned = {r.name for r in report.layers}
    assert pruned | set(report.skipped) == set(prunable)
    for n, w in _weights(model, pruned).items():
        assert int((w == 0).sum()) >= w.numel() // 2, n
    if pattern == "2:4":  # the RGB stem (27 inputs) and the 3x3 depthwise convs (9) cannot hold 2:4
        assert "features.0.0" in report.skipped
        depthwise = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
        assert depthwise and set(depthwise) <= set(report.skipped)
        for n, w in _weights(model, pruned).items():
            groups = w.detach().permute(0, 2, 3, 1).reshape(w.shape[0], -1, 4) if w.dim() == 4 \
                else w.detach().reshape(w.shape[0], -1, 4)
            assert int((groups != 0).sum(-1).max()) <= 2, n
    else:
        assert not report.skipped
    with torch.no_grad():
        assert torch.isfinite(model(images(seed + 1, n=1)[0])).all()


def test_timm_vit_reaches_sparsity(seed):
    with torch_seed(seed):
        model = timm_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=2,
                           num_classes=10)
    report = prune(model, images(seed), method="iht", sparsity=0.5, layers="blocks.*", progress=False)
    names = {r.name for r in report.layers}
    assert names == {f"blocks.{i}.{p}" for i in range(2) for p in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}
    for n, w in _weights(model, names).items():
        assert int((w == 0).sum()) == w.numel() // 2, n
    assert report.engine["network_passes"] == 0  # block by block, no pass over the whole network
    with torch.no_grad():
        assert torch.isfinite(model(images(seed + 1, n=1)[0])).all()


def test_benchmark_stand_ins_have_torchvision_layers():
    """benchmarks/_vision_models.py builds ResNet-18 and MobileNetV2 without torchvision; the
    same parameter and buffer shapes, in the same order, as torchvision's definitions."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from _vision_models import MobileNetV2, ResNet18

    for ours, theirs in ((ResNet18, "resnet18"), (MobileNetV2, "mobilenet_v2")):
        with torch_seed(0):
            a, b = ours().state_dict(), torchvision_model(theirs, num_classes=10).state_dict()
        assert [tuple(v.shape) for v in a.values()] == [tuple(v.shape) for v in b.values()], theirs
