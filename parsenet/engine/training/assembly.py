"""Building what a training run needs from its config: model, datasets, loaders, optimiser,
schedule and loss — without changing the caller's config."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from parsenet.config import instantiate
from parsenet.data import build_dataset
from parsenet.data.base import SegmentationDataset
from parsenet.data.info import DatasetInfo
from parsenet.data.loader import collate_samples, make_loader, worker_init
from parsenet.data.normalization import InputNormalization, get_normalization
from parsenet.data.sampling import ResumableSampler, SeededSamples
from parsenet.data.transforms import eval_transform, train_transform
from parsenet.engine.runtime.distributed import DistContext, main_process_first
from parsenet.engine.runtime.memory_format import choose_memory_format
from parsenet.engine.scoring.split import shard
from parsenet.engine.training.class_weight import checked_class_weight, resolved_class_weight
from parsenet.engine.training.optim import build_optimizer, parameter_groups
from parsenet.engine.training.settings import TrainSettings
from parsenet.engine.training.validation import Validation
from parsenet.errors import ConfigError, DataError
from parsenet.models import build_model
from parsenet.models.parsenet import SegmentationNet
from parsenet.models.pretrained import (
    choose_input_norm,
    initialise_backbone,
    resolve_pretrained,
)

log = logging.getLogger(__name__)


@dataclass
class TrainingParts:
    """The objects one training run is made of.

    Attributes:
        config: the run's config with the resolved ``model.input_norm`` (what checkpoints keep)
            and ``layout``, the memory layout chosen and how (``LayoutChoice.record``).
        model: the plain module on the device (its weights are what is saved).
        memory_format: the layout of the weights and inputs (``train.channels_last``: forced,
            or ``auto``, the faster one here, see :mod:`parsenet.engine.runtime.memory_format`).
        train_set, val_set: the augmented training split and the validation split as it is.
        validation: scores the validation split while training (the ``inference`` node).
        optimizer, scheduler, loss: from ``optim`` + ``lr_mult``, ``schedule`` and ``loss``.
    """

    config: dict[str, Any]
    model: SegmentationNet
    memory_format: torch.memory_format
    train_set: SegmentationDataset
    val_set: SegmentationDataset
    validation: Validation
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss: torch.nn.Module


def check_batch_statistics(model: SegmentationNet, model_cfg: dict[str, Any], batch: int) -> None:
    """Refuse, before any weight is loaded, a head that BatchNorms an image-pooled 1×1 vector when
    each process trains on ``batch`` = 1 image: such a BatchNorm sees one value per channel, and
    torch stops the first step ("Expected more than 1 value per channel when training")."""
    if batch > 1 or not model.head.pooled_batchnorm:
        return
    head = model_cfg.get("head") or {}
    chosen = f"model.head.type={head.get('type') or 'parsenet'}"
    if head.get("context_norm") == "batchnorm":
        chosen += " with model.head.context_norm=batchnorm"
    raise ConfigError(
        f"{chosen} normalises the image-pooled 1×1 vector with BatchNorm, which cannot train on "
        "train.batch_size=1 (one value per channel); use train.batch_size=2 or more "
        "(train.iter_size keeps the images per update), or ParseNet's context "
        "(model/head=parsenet, L2Norm: no batch statistics)"
    )


def initialised_model(
    model_cfg: dict[str, Any],
    num_classes: int,
    data_name: str | None = None,
    batch_size: int | None = None,
) -> tuple[SegmentationNet, dict[str, Any]]:
    """The model with its trunk initialised from ``backbone.pretrained``, and a copy of
    ``model_cfg`` whose ``input_norm`` is the convention those weights want and whose
    ``backbone.pretrained`` is what ``auto`` stood for (``imagenet`` for real data, named by
    ``data_name``, at full width; ``none`` for the synthetic data or another width; logged).
    With ``batch_size`` (images per process and step), a head that cannot train on it is
    refused first (:func:`check_batch_statistics`)."""
    model = build_model(model_cfg, num_classes)
    if batch_size is not None:
        check_batch_statistics(model, model_cfg, batch_size)
    requested = model_cfg["backbone"].get("pretrained")
    trunk = model.backbone
    source, why = resolve_pretrained(requested, data_name, trunk.width_mult, trunk.weights_name)
    if why:
        log.info(why)
    setting = f"model.backbone.pretrained={requested}" + (
        f" (imagenet for data {data_name} at full width)" if requested == "auto" else ""
    )  # how errors name the choice
    weights_convention = initialise_backbone(model.backbone, source, setting)
    resolved = {
        **model_cfg,
        "backbone": {**model_cfg["backbone"], "pretrained": source},
        "input_norm": choose_input_norm(model_cfg.get("input_norm"), weights_convention),
    }
    return model, resolved


def training_datasets(
    data_cfg: dict[str, Any], normalization: InputNormalization, global_batch: int, processes: int
) -> tuple[SegmentationDataset, SegmentationDataset]:
    """The training split (augmented as ``data.augment`` says) and the validation split."""
    augment = data_cfg["augment"]
    train_set = build_dataset(
        data_cfg,
        data_cfg["train_split"],
        train_transform(
            normalization, augment["crop_size"], augment["scale_range"], augment["flip"]
        ),
    )
    if len(train_set) < global_batch:
        per = f" × {processes} processes" if processes > 1 else ""
        raise DataError(
            f"the {data_cfg['train_split']} split has {len(train_set)} images, fewer than "
            f"train.batch_size={global_batch // processes}{per}; lower the batch size"
        )
    return train_set, build_dataset(data_cfg, data_cfg["val_split"], eval_transform(normalization))


def training_shape(
    data_cfg: dict[str, Any], batch_size: int, train_set: SegmentationDataset
) -> tuple[int, int, int, int]:  # only read when the layout is measured (channels_last=auto)
    """The shape of a training batch, for choosing the layout: ``batch_size``×3×crop×crop, or
    without a crop (whole images) the size of the first training image (512×512 when it cannot
    be read; the error, if any, comes where training reads it)."""
    crop = data_cfg["augment"].get("crop_size")
    if crop:
        return (batch_size, 3, crop, crop)
    try:
        height, width = train_set.load_pair(0)[0].shape[:2]
    except (DataError, IndexError):
        height = width = 512
    return (batch_size, 3, height, width)


def assemble(
    cfg: dict[str, Any], settings: TrainSettings, info: DatasetInfo, context: DistContext
) -> TrainingParts:
    """Build every part of a run on ``context.device`` (one process downloads weights or
    generates data at a time; the others read it afterwards)."""
    config = copy.deepcopy(cfg)
    weight_setting = checked_class_weight(config["loss"].get("class_weight"), info.num_classes)
    with main_process_first(context):
        model, config["model"] = initialised_model(
            config["model"], info.num_classes, config["data"].get("name"), settings.batch_size
        )
        normalization = get_normalization(config["model"]["input_norm"])
        train_set, val_set = training_datasets(
            config["data"],
            normalization,
            settings.batch_size * context.world_size,
            context.world_size,
        )
    layout = choose_memory_format(
        model,
        context.device,
        training_shape(config["data"], settings.batch_size, train_set)
        if settings.channels_last == "auto"
        else (settings.batch_size, 3, 1, 1),  # a forced layout needs no shape
        settings.channels_last,
        training=True,
        amp=settings.amp,
        context=context,
    )
    config["layout"] = layout.record()
    memory_format = layout.memory_format
    model.to(context.device, memory_format=memory_format)
    val_loader = make_loader(
        shard(val_set, context),
        1,
        settings.num_workers,
        pin_memory=context.device.type == "cuda",
    )
    optim_cfg, mult = config["optim"], config["lr_mult"]
    optimizer = build_optimizer(
        optim_cfg,
        parameter_groups(
            model,
            optim_cfg["lr"],
            optim_cfg.get("weight_decay", 0.0),
            mult["new_layers"],
            mult["bias"],
            scale_mult=mult["scale"],
        ),
    )
    scheduler = instantiate(config["schedule"], "schedule")(optimizer, settings.max_iters)
    class_weight = resolved_class_weight(weight_setting, train_set, info)
    weighted = {} if class_weight is None else {"class_weight": class_weight}
    loss = instantiate(config["loss"], "loss", ignore_index=info.ignore_index, **weighted)
    if isinstance(loss, torch.nn.Module):
        loss.to(context.device)  # its class weights
    validation = Validation(
        val_set,
        val_loader,
        settings.inference,
        context,
        settings.num_overlays,
        split=config["data"]["val_split"],
        report_worst=settings.report_worst,
    )
    return TrainingParts(
        config, model, memory_format, train_set, val_set, validation, optimizer, scheduler, loss
    )


def forward_module(
    model: torch.nn.Module, settings: TrainSettings, context: DistContext
) -> torch.nn.Module:
    """What training calls: ``model`` wrapped in DDP across processes and ``torch.compile``d
    where asked (the plain ``model`` stays the one whose weights are saved)."""
    if context.distributed:
        device = context.device
        model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if settings.compile:
        model = torch.compile(model)
    return model


def training_loader(
    train_set: SegmentationDataset, settings: TrainSettings, context: DistContext, start: int
) -> DataLoader:
    """The endless training loader of this process, positioned after ``start`` samples: a
    seeded permutation per epoch, every sample with its own augmentation seed."""
    sampler = ResumableSampler(
        len(train_set),
        settings.batch_size * context.world_size,
        seed=settings.seed,
        rank=context.rank,
        world_size=context.world_size,
        start=start,
    )
    return DataLoader(
        SeededSamples(train_set),
        batch_size=settings.batch_size,
        sampler=sampler,
        num_workers=settings.num_workers,
        pin_memory=context.device.type == "cuda",
        worker_init_fn=worker_init,
        collate_fn=collate_samples,
        # Its own generator: starting the loader never draws from the global torch RNG, which
        # a resumed run restores from the checkpoint (dropout draws from it).
        generator=torch.Generator().manual_seed(settings.seed),
    )
