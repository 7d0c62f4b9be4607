"""Several copies of one network, each with its own weights, run as one (``torch.func``).

A small network leaves most of a large GPU idle: each of its layers is a launch too small to fill the
device, and a step can take no less time than Python needs to issue its kernels. Copies of one
architecture can share those launches. :class:`StackedModels` stacks each weight of ``K`` copies into
one tensor with a leading dimension of ``K`` (``torch.func.stack_module_state``) and runs the network's
one ``forward`` over them with ``torch.func.vmap``, which turns each convolution of the ``K`` copies into
one grouped convolution: one launch per layer for all the copies.

Training the stack trains each copy as it would be trained alone, up to rounding: the gradient of the
sum of the copies' losses with respect to one copy's weights is that copy's own gradient (no copy's
loss depends on another's weights), and SGD, its momentum and its weight decay act on each number by
itself. This is PyTorch's "model ensembling" recipe, used here to run the seeds of an experiment (the
shuffle ablation of Chapter 7) in one process instead of one process each.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


class StackedModels(nn.Module):
    """``K`` copies of one architecture (``models``: a list of ``K`` modules of one class and shape,
    e.g. built from ``K`` seeds) as one module whose parameters and buffers are the copies' own,
    stacked along a new first dimension. The copies are copied: later changes to ``models`` do not
    reach the stack.

    ``forward(images)`` returns logits of shape ``(K, B, classes)``. ``images`` of shape
    ``(K, B, C, H, W)`` gives each copy its own batch (training: each seed its own images); ``(B, C, H,
    W)`` gives every copy the same batch (evaluation). :meth:`copy` takes one copy out as an ordinary
    module; :func:`stacked_criterion` makes a loss whose gradient is each copy's own.
    """

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        if len(models) < 1:
            raise ValueError("StackedModels needs at least one model")
        shapes = [{k: (v.shape, v.dtype) for k, v in m.state_dict().items()} for m in models]
        classes = {type(m) for m in models}
        if len(classes) > 1 or any(s != shapes[0] for s in shapes[1:]):
            raise ValueError("StackedModels stacks copies of one architecture: every model must be of "
                             "the same class, with the same parameters and buffers of the same shapes")
        params, buffers = stack_module_state(models)
        self.copies = len(models)
        self._names = {"params": list(params), "buffers": list(buffers)}
        for name, value in params.items():
            self.register_parameter(self._flat(name), nn.Parameter(value.detach().clone()))
        for name, value in buffers.items():
            self.register_buffer(self._flat(name), value.clone())
        # The architecture without weights (on the meta device): not a submodule, so that its empty
        # tensors stay out of parameters(), state_dict() and .to(); train() and eval() reach it below.
        self._template = (copy.deepcopy(models[0]).to("meta"),)

    @staticmethod
    def _flat(name: str) -> str:
        return "stacked__" + name.replace(".", "__")

    def _stacked(self, kind: str) -> dict:
        get = self.get_parameter if kind == "params" else self.get_buffer
        return {name: get(self._flat(name)) for name in self._names[kind]}

    def train(self, mode: bool = True) -> StackedModels:
        self._template[0].train(mode)
        return super().train(mode)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 5 and images.shape[0] != self.copies:
            raise ValueError(f"images of shape {tuple(images.shape)}: a batch per copy needs a first "
                             f"dimension of {self.copies} (the copies); give (B, C, H, W) for one batch "
                             f"shared by every copy")
        if images.dim() not in (4, 5):
            raise ValueError(f"images of shape {tuple(images.shape)}: expected (copies, B, C, H, W) or "
                             f"(B, C, H, W)")
        template = self._template[0]

        def one_copy(params, buffers, x):
            return functional_call(template, (params, buffers), (x,))

        in_dims = (0, 0, 0 if images.dim() == 5 else None)
        return vmap(one_copy, in_dims=in_dims)(self._stacked("params"), self._stacked("buffers"), images)

    def copy(self, index: int) -> nn.Module:
        """Copy ``index`` as an ordinary module of the stacked architecture, on the stack's device,
        with its own weights and BatchNorm statistics (copied: training the stack further leaves it
        unchanged)."""
        if not 0 <= index < self.copies:
            raise IndexError(f"copy {index} of a stack of {self.copies} (0 to {self.copies - 1})")
        state = {name: tensor[index].detach().clone()
                 for kind in ("params", "buffers") for name, tensor in self._stacked(kind).items()}
        device = next(iter(state.values())).device
        module = copy.deepcopy(self._template[0]).to_empty(device=device)
        module.load_state_dict(state)
        return module.train(self.training)


def stacked_criterion(criterion: nn.Module):
    """``criterion`` (a loss averaged over a batch, as ``nn.CrossEntropyLoss``) for the ``(K, B,
    classes)`` logits of :class:`StackedModels` and ``(K, B)`` labels: the ``K`` copies' own losses, a
    vector. Their sum is what the step differentiates: its gradient, for each copy, is that copy's own
    loss's gradient, as if it were trained alone."""
    return vmap(criterion)


class StackedLoader:
    """The batches of several loaders (one per copy, e.g. each seeded by its copy's seed), stacked:
    images ``(K, B, C, H, W)`` and labels ``(K, B)``. ``set_epoch`` and ``len`` are the loaders' own
    (they must have the same number of batches)."""

    def __init__(self, loaders: list):
        if len({len(loader) for loader in loaders}) != 1:
            raise ValueError("the loaders of a stack must give the same number of batches")
        self.loaders = loaders

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        for loader in self.loaders:
            loader.set_epoch(epoch, start_step)

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self):
        for batches in zip(*self.loaders):
            images, labels = zip(*batches)
            yield stack_per_copy(images), torch.stack(labels)


def stack_per_copy(images) -> torch.Tensor:
    """Batches ``(B, C, H, W)`` stacked into ``(K, B, C, H, W)``, each copy's batch keeping the first
    batch's memory layout (``channels_last`` stays ``channels_last`` within each copy)."""
    if images[0].is_contiguous(memory_format=torch.channels_last) and not images[0].is_contiguous():
        return torch.stack([x.permute(0, 2, 3, 1) for x in images]).permute(0, 1, 4, 2, 3)
    return torch.stack(images)
