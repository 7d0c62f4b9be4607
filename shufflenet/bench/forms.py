"""The networks the benchmarks measure and the forms they run in (eager, channels_last, compiled)."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..model import shufflenet_v1


def _torchvision(name: str) -> nn.Module:
    import torchvision  # imported when needed: the rest of the package does not need it

    return getattr(torchvision.models, name)(weights=None)


# Every network is freshly initialised (weights=None): speed does not depend on the weights' values.
MODELS = {
    "shufflenet_v1_g1_x0_5": partial(shufflenet_v1, groups=1, scale=0.5),
    "shufflenet_v1_g1_x1_0": partial(shufflenet_v1, groups=1, scale=1.0),
    "shufflenet_v1_g3_x0_5": partial(shufflenet_v1, groups=3, scale=0.5),
    "shufflenet_v1_g3_x1_0": partial(shufflenet_v1, groups=3, scale=1.0),
    "shufflenet_v1_g8_x0_5": partial(shufflenet_v1, groups=8, scale=0.5),
    "shufflenet_v1_g8_x1_0": partial(shufflenet_v1, groups=8, scale=1.0),
    "shufflenet_v2_x1_0": partial(_torchvision, "shufflenet_v2_x1_0"),
    "mobilenet_v2": partial(_torchvision, "mobilenet_v2"),
    "mobilenet_v3_small": partial(_torchvision, "mobilenet_v3_small"),
    "resnet18": partial(_torchvision, "resnet18"),
    # ShuffleNet 1x (g = 3) without its shuffles (Table 3's ablation): its time, subtracted from the
    # full network's in the same form, is what the shuffles cost inside the network.
    "shufflenet_v1_g3_x1_0_noshuffle": partial(shufflenet_v1, groups=3, scale=1.0, mixing="none"),
}

# eager: the model as built (NCHW). channels_last: weights and activations stored NHWC, the layout
# oneDNN's CPU convolutions work in. compile: torch.compile (Inductor) of the channels_last model with
# freezing, which treats the weights as constants (folds each BatchNorm into its convolution and
# pre-packs the weights); compile_no_freezing: the same without freezing, to show what freezing adds.
FORMS = {
    "eager": {"memory_format": torch.contiguous_format, "inductor": None},
    "channels_last": {"memory_format": torch.channels_last, "inductor": None},
    "compile": {"memory_format": torch.channels_last, "inductor": {"freezing": True}},
    "compile_no_freezing": {"memory_format": torch.channels_last, "inductor": {"freezing": False}},
}


# The memory layouts the shuffle and G2 experiments compare.
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def build_model(name: str, seed: int = 0) -> nn.Module:
    """A freshly initialised model of :data:`MODELS`, in eval mode, its weights drawn with ``seed``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    torch.manual_seed(seed)
    return MODELS[name]().eval()


def prepare(model: nn.Module, form: str = "channels_last"):
    """Turn an eval-mode ``model`` into one of :data:`FORMS`; returns (callable, memory format).

    Feed the callable inputs in the returned memory format: ``x.contiguous(memory_format=...)``. The
    model is converted in place (``.to(memory_format=...)``): pass a copy to keep the original. The
    compiled forms are for inference only: call them under ``torch.inference_mode()``.
    """
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose from {', '.join(FORMS)}")
    memory_format, inductor = FORMS[form]["memory_format"], FORMS[form]["inductor"]
    model = model.eval().to(memory_format=memory_format)
    if inductor is not None:
        model = CompiledModel(model, inductor)
    return model, memory_format


def _dynamo_limits(limit: int = 256) -> dict:
    """Raised recompile limits, under whichever names this torch version uses.

    Every ShuffleNetV1 shares one ``forward``, so Dynamo counts each network, input shape and form as
    a recompilation of the same code; past its default limit (8) it would fall back to eager silently.
    """
    import torch._dynamo.config as config

    names = [("recompile_limit", "cache_size_limit"),
             ("accumulated_recompile_limit", "accumulated_cache_size_limit")]
    found = [next((n for n in pair if hasattr(config, n)), None) for pair in names]
    return {n: max(getattr(config, n), limit) for n in found if n is not None}


class CompiledModel:
    """``torch.compile(model)`` whose compilations run under the given Inductor settings.

    ``torch.compile`` compiles lazily, at the first call with each new input shape, and Inductor reads
    ``freezing`` from its global configuration at that moment, so each first call runs inside
    ``config.patch`` (which restores the settings afterwards), with Dynamo's recompile limits raised the
    same way; later calls go straight to the compiled code.
    """

    def __init__(self, model: nn.Module, inductor_settings: dict):
        self.compiled = torch.compile(model, dynamic=False)
        self.inductor_settings = dict(inductor_settings)
        self._seen = set()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.stride(), x.device, x.dtype)
        if key in self._seen:
            return self.compiled(x)
        import torch._dynamo.config as dynamo_config
        import torch._inductor.config as inductor_config

        with inductor_config.patch(self.inductor_settings), dynamo_config.patch(_dynamo_limits()):
            out = self.compiled(x)
        self._seen.add(key)
        return out


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def export_and_check(model: nn.Module, example: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4):
    """Export ``model`` with ``torch.export.export`` and check it against eager on ``example``.

    Returns ``(exported_program, max_abs_diff)``; raises ``AssertionError`` when an output differs from
    eager by more than ``atol + rtol * |eager|``. The exported program holds the weights and a graph of
    ATen operators with no Python left in it: what a deployment runtime (AOTInductor, ExecuTorch) takes.
    """
    model = model.eval()
    with torch.inference_mode():
        expected = model(example)
    exported = torch.export.export(model, (example,))
    with torch.inference_mode():
        got = exported.module()(example)
    diff = max_abs_diff(got, expected)
    assert torch.allclose(got, expected, atol=atol, rtol=rtol), \
        f"exported model differs from eager by {diff:.3g}"
    return exported, diff
