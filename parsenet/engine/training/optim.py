"""SGD parameter groups with the paper's learning-rate multipliers, and the poly schedule."""

from __future__ import annotations

import torch
from torch import nn

from parsenet.config import shipped
from parsenet.errors import ConfigError
from parsenet.models.l2norm import L2Norm

PAPER_MULT = shipped("lr_mult", "paper")  # configs/lr_mult/paper.yaml: the defaults' one owner


def new_layers(model: nn.Module) -> tuple[nn.Module, ...]:
    """The modules ``model`` declares new through its ``new_layers()`` method (see
    :meth:`parsenet.models.parsenet.SegmentationNet.new_layers`); none for a model without one."""
    declared = getattr(model, "new_layers", None)
    return tuple(declared()) if callable(declared) else ()


def parameter_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    new_layer_mult: float = PAPER_MULT["new_layers"],
    bias_mult: float = PAPER_MULT["bias"],
    *,
    scale_mult: float = PAPER_MULT["scale"],
) -> list[dict]:
    """Split parameters into SGD groups the way the Caffe model's ``lr_mult``/``decay_mult`` did
    (the multipliers' defaults are ``configs/lr_mult/paper.yaml``'s).

    - ``base``: trunk and upsampling weights, lr × 1, weight decay × 1; their biases
      lr × ``bias_mult``, no decay;
    - ``new``: the layers the model declares new (:func:`new_layers`: the head's 1×1
      classifiers), lr × ``new_layer_mult`` for weights and × ``new_layer_mult · bias_mult`` for
      biases, no decay on biases;
    - ``scale``: the :class:`L2Norm` γ, lr × ``scale_mult`` with weight decay (Caffe gave them no
      ``param`` block, i.e. × 1).

    Biases are the parameters named ``bias``; parameters that do not require gradients are left
    out. Each group carries a ``name`` and its ``lr_mult`` for logging.
    """
    new = set(new_layers(model))
    groups: dict[str, dict] = {}
    for module in model.modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if isinstance(module, L2Norm):
                name, mult, decay = "scale", scale_mult, weight_decay
            else:
                is_new, is_bias = module in new, param_name == "bias"
                name = ("new" if is_new else "base") + ("_bias" if is_bias else "_weight")
                mult = (new_layer_mult if is_new else 1.0) * (bias_mult if is_bias else 1.0)
                decay = 0.0 if is_bias else weight_decay
            group = groups.setdefault(
                name,
                {
                    "name": name,
                    "params": [],
                    "lr": lr * mult,
                    "lr_mult": mult,
                    "weight_decay": decay,
                },
            )
            group["params"].append(param)
    return list(groups.values())


def poly_schedule(
    optimizer: torch.optim.Optimizer, max_iters: int, power: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """``lr = base_lr · (1 − iteration / max_iters) ^ power``, stepped once per iteration."""
    if max_iters < 1:
        raise ConfigError(f"train.max_iters must be at least 1, got {max_iters}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda iteration: max(0.0, 1.0 - iteration / max_iters) ** power
    )


def build_optimizer(cfg: dict, groups: list[dict]) -> torch.optim.Optimizer:
    """Instantiate an ``optim`` config node (``_target_`` + ``_partial_``) over parameter groups.

    The groups carry their own learning rates and weight decay (see :func:`parameter_groups`);
    the node's other settings (momentum, betas, …) apply to all of them.
    """
    from hydra.utils import instantiate

    try:
        factory = instantiate(cfg)
    except Exception as error:  # Hydra wraps import and argument errors
        raise ConfigError(f"optim: cannot build {cfg.get('_target_')!r}: {error}") from None
    return factory(groups)
