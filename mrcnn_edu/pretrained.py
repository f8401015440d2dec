"""Pretrained weights: torchvision's COCO Mask R-CNN and ImageNet ResNets, read from local files.

Training Mask R-CNN on COCO takes days of GPU time; torchvision publishes the result. Its
``maskrcnn_resnet50_fpn`` COCO weights (box AP 37.9, mask AP 34.6 on COCO val2017) were trained with exactly
the architecture of ``Config.preset("torchvision")``, so :func:`load_torchvision_maskrcnn` turns the file into
a ready :class:`~mrcnn_edu.model.MaskRCNN` that detects the 80 COCO categories. To train your own detector,
start from ImageNet classification weights instead: :func:`init_backbone_from_imagenet` fills the backbone
and leaves the FPN and the heads randomly initialised.

Getting the files: mrcnn_edu never downloads anything. On a machine with internet, fetch each file once
(a browser, ``wget`` or ``curl -LO``) and keep it; pass its path::

    https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth   (170 MB, Mask R-CNN COCO)
    https://download.pytorch.org/models/resnet50-0676ba61.pth                    (ImageNet ResNet-50, V1)
    https://download.pytorch.org/models/resnet101-63fe2227.pth                   (ImageNet ResNet-101, V1)

(``resnet50-11ad3fa6.pth`` and ``resnet101-cd907fc2.pth``, torchvision's V2 ImageNet weights, load too.)
Files are read with ``torch.load(..., weights_only=True, map_location="cpu")``: a ``.pth`` file is a pickle,
and a full unpickle would run whatever code the file names, so only tensors and plain containers are read.
The command line names a file as ``torchvision:PATH`` or ``imagenet:PATH`` (:func:`parse_weights_spec`).

Two layouts of the same weights
    torchvision has renamed some submodules since the COCO weights were published (2019): newer versions wrap
    each FPN, RPN and mask-head conv in a ``Conv2dNormActivation`` (an ``nn.Sequential`` whose conv is
    child ``0``), so the parameter ``rpn.head.conv.weight`` became ``rpn.head.conv.0.0.weight``. The
    published files were never rewritten: torchvision renames their keys on the fly when it loads them
    (``_load_from_state_dict`` of ``FeaturePyramidNetwork``, ``RPNHead`` and ``MaskRCNNHeads``, whenever the
    state dict carries no version >= 2 for that module). So a torchvision Mask R-CNN state dict comes in the
    *original* layout (the downloaded file) or the *current* one (``model.state_dict()`` of torchvision
    >= 0.13, e.g. after fine-tuning with torchvision), and both must load. Here each key is mapped on its
    own, by the table below, so either layout (or a mix) works; metadata versions are not consulted.

Key table (``i`` = FPN level 0..3, finest first; ``n`` = 1..4; both layouts map to the same name here)
    ======================================================  ================================================
    torchvision: original file / current module             mrcnn_edu (``MaskRCNN.state_dict()``)
    ======================================================  ================================================
    ``backbone.body.<name>``                                ``backbone.<name>`` (ResNet names on both sides)
    ``backbone.fpn.inner_blocks.i.W`` / ``.i.0.W``          ``fpn.inner_blocks.i.W``
    ``backbone.fpn.layer_blocks.i.W`` / ``.i.0.W``          ``fpn.layer_blocks.i.W``
    ``rpn.head.conv.W`` / ``rpn.head.conv.0.0.W``           ``rpn_head.conv.W``
    ``rpn.head.cls_logits.W``                               ``rpn_head.cls_logits.W``
    ``rpn.head.bbox_pred.W``                                ``rpn_head.bbox_pred.W``
    ``roi_heads.box_head.fc6.W``, ``.fc7.W``                ``box_head.fc6.W``, ``box_head.fc7.W``
    ``roi_heads.box_predictor.cls_score.W``                 ``box_predictor.cls_score.W``
    ``roi_heads.box_predictor.bbox_pred.W``                 ``box_predictor.bbox_pred.W``
    ``roi_heads.mask_head.mask_fcn<n>.W`` / ``.<n-1>.0.W``  ``mask_head.mask_fcn<n>.W``
    ``roi_heads.mask_predictor.conv5_mask.W``               ``mask_head.conv5_mask.W``
    ``roi_heads.mask_predictor.mask_fcn_logits.W``          ``mask_head.mask_fcn_logits.W``
    ======================================================  ================================================

    ``W`` is ``weight`` or ``bias``. BatchNorm's ``num_batches_tracked`` counters may be present or absent
    (torchvision's ``FrozenBatchNorm2d`` drops them, its ``BatchNorm2d`` keeps them); they are dropped when
    the model has no such buffer, as with ``backbone_norm="frozen_bn"``.

Failing loudly: a key that fits no row of the table, a model tensor that the file does not fill, and a
tensor whose shape differs are all listed, by name, in one ValueError (with a hint when the cause is clear:
another class count, another ResNet depth, or torchvision's different ``maskrcnn_resnet50_fpn_v2``
architecture), and the model is never half-loaded.

Shape glossary
    K: object classes; ``num_classes = K + 1`` with the background (91 for torchvision's COCO weights: COCO
    category ids 1..90, ten of them unused, see :mod:`mrcnn_edu.data.coco_names`).
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Callable, Mapping

import torch

from .backbone import BACKBONE_SPECS, load_imagenet_state_dict
from .checkpoint import FORMAT as CHECKPOINT_FORMAT
from .config import Config
from .data.coco_names import COCO_CATEGORY_NAMES
from .model import MaskRCNN

__all__ = [
    "MASKRCNN_COCO_URL",
    "IMAGENET_URLS",
    "WEIGHT_KINDS",
    "KEY_MAP",
    "load_torchvision_maskrcnn",
    "convert_torchvision_state_dict",
    "init_backbone_from_imagenet",
    "parse_weights_spec",
]

MASKRCNN_COCO_URL = "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
IMAGENET_URLS = {
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    "resnet101": "https://download.pytorch.org/models/resnet101-63fe2227.pth",
}
#: What ``KIND:PATH`` on the command line may name: a whole torchvision Mask R-CNN, or an ImageNet backbone.
WEIGHT_KINDS = {
    "torchvision": "torchvision Mask R-CNN weights (load_torchvision_maskrcnn)",
    "imagenet": "torchvision ImageNet ResNet weights for the backbone (init_backbone_from_imagenet)",
}

_W = r"(weight|bias)"
#: The key table of the module docstring: (torchvision key pattern, our key), tried in order. Each pattern
#: must match a whole key; our key is a ``re`` template (``\1`` = first group) or a function of the match.
KEY_MAP: tuple[tuple[str, str | Callable[[re.Match], str]], ...] = (
    (r"backbone\.body\.(.+)", r"backbone.\1"),
    (rf"backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d+)(?:\.0)?\.{_W}", r"fpn.\1.\2.\3"),
    (rf"rpn\.head\.conv(?:\.0\.0)?\.{_W}", r"rpn_head.conv.\1"),
    (rf"rpn\.head\.(cls_logits|bbox_pred)\.{_W}", r"rpn_head.\1.\2"),
    (rf"roi_heads\.box_head\.(fc6|fc7)\.{_W}", r"box_head.\1.\2"),
    (rf"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.{_W}", r"box_predictor.\1.\2"),
    (rf"roi_heads\.mask_head\.mask_fcn([1-9])\.{_W}", r"mask_head.mask_fcn\1.\2"),
    # current layout: torchvision's Sequential counts the convs from 0, the original names from 1
    (rf"roi_heads\.mask_head\.([0-8])\.0\.{_W}", lambda m: f"mask_head.mask_fcn{int(m[1]) + 1}.{m[2]}"),
    (rf"roi_heads\.mask_predictor\.(conv5_mask|mask_fcn_logits)\.{_W}", r"mask_head.\1.\2"),
)
_RULES = [(re.compile(pattern), template) for pattern, template in KEY_MAP]
_COUNTER = "num_batches_tracked"


def _map_key(key: str) -> str | None:
    """Our name for torchvision's ``key``, or None when no row of :data:`KEY_MAP` fits it."""
    for rule, template in _RULES:
        m = rule.fullmatch(key)
        if m is not None:
            return template(m) if callable(template) else m.expand(template)
    return None


# ------------------------------------------------------------------------------------------ reading files
def _read(path_or_state_dict, arg: str, url_hint: str) -> tuple[Mapping, str]:
    """``(state dict, description of where it came from)`` from a path or a mapping."""
    if isinstance(path_or_state_dict, Mapping):
        return _unwrap(path_or_state_dict, arg, "the given dict"), "the given state dict"
    if not isinstance(path_or_state_dict, (str, os.PathLike)):
        raise ValueError(
            f"{arg} must be a file path or a state dict mapping, got {type(path_or_state_dict).__name__}"
        )
    path = os.fspath(path_or_state_dict)
    source = f"file {path!r}"
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{arg}: no file {path!r}. mrcnn_edu never downloads weights: fetch them once on a machine with "
            f"internet ({url_hint}) and pass the local path"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        # weights_only refuses any pickled class: a whole nn.Module, an argparse.Namespace in a checkpoint...
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if isinstance(err, pickle.UnpicklingError) and found:
            raise ValueError(
                f"{arg}: {source} holds Python objects that torch.load(weights_only=True) refuses to "
                f"unpickle (it pickles {found[1]}): a whole model saved with torch.save(model), or a "
                "training checkpoint with extra objects. mrcnn_edu only reads tensors. If you trust the "
                "file, re-save just the weights where it was made: torch.save(model.state_dict(), 'w.pth')"
            ) from err
        # otherwise not a torch file at all, truncated, or corrupt
        raise ValueError(
            f"{arg}: could not read {source} as a torch .pth file (wrong file, or truncated download?): "
            f"{type(err).__name__}: {err}"
        ) from err
    return _unwrap(state, arg, source), source


def _non_tensors(state: Mapping) -> list:
    return [k for k, v in state.items() if not isinstance(v, torch.Tensor)]


def _unwrap(obj, arg: str, source: str) -> Mapping:
    """The state dict in ``obj``: ``obj`` itself, or the ``"model"`` entry of a training checkpoint."""
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{arg}: {source} holds a {type(obj).__name__}, not a state dict (a dict of tensors)"
        )
    if obj.get("format") == CHECKPOINT_FORMAT:
        raise ValueError(
            f"{arg}: {source} is an mrcnn_edu training checkpoint, not torchvision weights; load it with "
            "mrcnn_edu.checkpoint.load_checkpoint and model.load_state_dict(checkpoint['model'])"
        )
    bad = _non_tensors(obj)
    if bad and isinstance(obj.get("model"), Mapping) and not _non_tensors(obj["model"]):
        return obj["model"]  # a training checkpoint {"model": state dict, "optimizer": ..., "epoch": ...}
    if bad:
        raise ValueError(
            f"{arg}: {source} is not a state dict: entries {bad[:10]} are not tensors (and it has no "
            "'model' entry holding one)"
        )
    if not obj:
        raise ValueError(f"{arg}: {source} is an empty dict, not a state dict")
    return obj


# ------------------------------------------------------------------------------------------ key conversion
def _resnet_name(keys) -> tuple[str | None, tuple[int, ...]]:
    """Which ResNet of :data:`BACKBONE_SPECS` has these (ResNet-named) keys: ``(name or None, blocks)``."""
    blocks = []
    for stage in range(1, 5):
        found = {int(m[1]) for k in keys if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        blocks.append(max(found) + 1 if found else 0)
    kind = "bottleneck" if any(re.match(r"layer\d\.\d+\.conv3\.", k) for k in keys) else "basic"
    for name, (block, layers, _, _) in BACKBONE_SPECS.items():
        if block == kind and tuple(layers) == tuple(blocks):
            return name, tuple(blocks)
    return None, tuple(blocks)


def _convert(state: Mapping, model: MaskRCNN | None, arg: str, source: str) -> dict[str, torch.Tensor]:
    converted: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}  # our key -> torchvision key, for messages
    unknown, clashes = [], []
    for key, value in state.items():
        ours = _map_key(key) if isinstance(key, str) else None
        if ours is None:
            unknown.append(key)
        elif ours in converted:
            clashes.append(f"{origin[ours]!r} and {key!r} both give {ours!r}")
        else:
            converted[ours], origin[ours] = value, key
    missing, mismatched, hints = [], [], []
    if model is not None:
        own = model.state_dict()
        for ours in [k for k in converted if k not in own]:
            if ours.endswith(_COUNTER):
                del converted[ours]  # BatchNorm's step counter; our FrozenBatchNorm2d has none
            else:
                unknown.append(f"{origin[ours]} (-> {ours})")
        missing = [k for k in own if k not in converted and not k.endswith(_COUNTER)]
        for k, v in converted.items():
            if v.shape != own[k].shape:
                mismatched.append(f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}")
        cls = converted.get("box_predictor.cls_score.weight")
        if cls is not None and cls.shape[0] != own["box_predictor.cls_score.weight"].shape[0]:
            hints.append(
                f"the checkpoint has {cls.shape[0]} classes (background included) and the model "
                f"{model.config.num_classes}: pass num_classes={cls.shape[0]}"
            )
        depth, blocks = _resnet_name([k[len("backbone.") :] for k in converted if k.startswith("backbone.")])
        if depth is not None and depth != model.config.backbone:
            hints.append(
                f"the checkpoint's backbone is a {depth} (blocks per stage {blocks}) and the model's "
                f"config.backbone is {model.config.backbone!r}: use a config with backbone={depth!r}"
            )
    if any(re.match(r"roi_heads\.box_head\.\d|rpn\.head\.conv\.1\.", str(k)) for k in unknown):
        hints.append(
            "keys like roi_heads.box_head.0.0.weight come from torchvision's maskrcnn_resnet50_fpn_v2, "
            "a different architecture (conv box head with normalisation) that mrcnn_edu does not build"
        )
    if unknown or missing or mismatched or clashes:
        problems = []
        if unknown:
            problems.append(f"{len(unknown)} unknown key(s) {unknown}")
        if missing:
            problems.append(f"{len(missing)} model key(s) missing from the checkpoint {missing}")
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatch(es) [{'; '.join(mismatched)}]")
        if clashes:
            problems.append(f"duplicate keys [{'; '.join(clashes)}]")
        message = f"{arg}: {source} does not fit as torchvision Mask R-CNN weights: " + "; ".join(problems)
        if hints:
            message += ". Hint: " + "; ".join(hints)
        raise ValueError(message)
    return converted


def convert_torchvision_state_dict(
    state: Mapping[str, torch.Tensor], model: MaskRCNN | None = None
) -> dict[str, torch.Tensor]:
    """Rename a torchvision Mask R-CNN state dict (either layout, see the module docstring) to our names.

    state: torchvision key -> tensor (a ``{"model": state dict, ...}`` training checkpoint is unwrapped).
    model: when given, the result is also checked against ``model.state_dict()``: every key must exist there,
    every model tensor must be filled (BatchNorm ``num_batches_tracked`` counters excepted, and dropped when
    the model has none), shapes must agree.
    Returns a new dict, our key -> the *same* tensor objects (nothing is copied), ready for
    ``model.load_state_dict``. Raises ValueError listing every unknown, missing and mis-shaped key by name.
    """
    return _convert(_unwrap(state, "state", "the given state dict"), model, "state", "the given state dict")


def load_torchvision_maskrcnn(
    path_or_state_dict, num_classes: int = 91, *, config: Config | None = None, device="cpu"
) -> MaskRCNN:
    """A :class:`MaskRCNN` in eval mode with torchvision Mask R-CNN weights (a ``.pth`` path or a state dict).

    num_classes: ``K + 1`` of the checkpoint (91 for torchvision's COCO weights; another number for a model
    fine-tuned with torchvision on another dataset).
    config: the model's config; default ``Config.preset("torchvision", num_classes=num_classes)`` with COCO
    category names when ``num_classes == 91`` (none otherwise). A given config wins over ``num_classes``;
    a ``num_classes`` other than 91 that contradicts it is an error. The preset uses FrozenBatchNorm eps 0,
    as the COCO_V1 weights were trained (see :mod:`mrcnn_edu.backbone`).
    device: where the model goes (``"cpu"``, ``"cuda"``...); the file is always read on the CPU first.
    Raises FileNotFoundError (no such file: mrcnn_edu never downloads) or ValueError (not a state dict, or one
    that does not fit, with every offending key named; see :func:`convert_torchvision_state_dict`).
    """
    if config is None:
        names = COCO_CATEGORY_NAMES if num_classes == 91 else ()
        config = Config.preset("torchvision", num_classes=num_classes, class_names=names)
    elif num_classes not in (91, config.num_classes):
        raise ValueError(
            f"num_classes={num_classes} contradicts config.num_classes={config.num_classes}; give one of them"
        )
    state, source = _read(path_or_state_dict, "path_or_state_dict", MASKRCNN_COCO_URL)
    model = MaskRCNN(config)
    weights = _convert(state, model, "path_or_state_dict", source)
    # strict=False only so that absent num_batches_tracked counters (model norm "bn") are tolerated; every
    # other key was checked above.
    model.load_state_dict(weights, strict=False)
    return model.to(device).eval()


def init_backbone_from_imagenet(model: MaskRCNN, path_or_state_dict) -> MaskRCNN:
    """Fill ``model.backbone`` with torchvision ImageNet ResNet weights (a path or a state dict).

    For training: the FPN and heads keep their random initialisation. The file's ResNet (read off its keys)
    must be ``model.config.backbone`` (a ``resnet101`` file into a ``resnet50`` model is a ValueError saying
    so); the classifier ``fc.*`` is dropped, everything else must fit exactly (see
    :func:`mrcnn_edu.backbone.load_imagenet_state_dict`). ImageNet weights were trained with BatchNorm eps
    1e-5: a model with ``backbone_bn_eps=0`` (the ``torchvision`` preset, meant for the COCO weights) gets a
    warning. Returns ``model`` (changed in place).
    """
    if not isinstance(model, MaskRCNN):
        raise ValueError(f"model must be a mrcnn_edu MaskRCNN, got {type(model).__name__}")
    arg = "path_or_state_dict"
    want = model.config.backbone
    state, source = _read(path_or_state_dict, arg, IMAGENET_URLS.get(want, "torchvision.models.resnet*"))
    if any(isinstance(k, str) and k.startswith(("backbone.body.", "roi_heads.")) for k in state):
        raise ValueError(
            f"{arg}: {source} holds a whole torchvision detector, not ImageNet ResNet weights; load it with "
            "load_torchvision_maskrcnn"
        )
    depth, blocks = _resnet_name([k for k in state if isinstance(k, str)])
    if depth is not None and depth != want:
        raise ValueError(
            f"{arg}: {source} holds {depth} weights (blocks per stage {blocks}) but the model's "
            f"config.backbone is {want!r}: build the model with backbone={depth!r} or use a {want} file"
        )
    if model.config.backbone_bn_eps != 1e-5:
        warnings.warn(
            f"config.backbone_bn_eps is {model.config.backbone_bn_eps}, but ImageNet weights were trained "
            "with BatchNorm eps 1e-5 (use Config.preset('coco') to train from ImageNet)",
            UserWarning,
            stacklevel=2,
        )
    try:
        load_imagenet_state_dict(model.backbone, state)
    except ValueError as err:
        raise ValueError(f"{arg} ({source}): {err}") from err
    return model


def parse_weights_spec(spec: str) -> tuple[str, str]:
    """Split a command-line weights argument ``KIND:PATH`` into ``(kind, path)``, ``~`` expanded.

    kind: one of :data:`WEIGHT_KINDS`, ``"torchvision"`` (a whole Mask R-CNN) or ``"imagenet"`` (backbone
    only). Only the first ``:`` splits, so ``torchvision:C:/weights/x.pth`` works. The file is not opened.
    """
    if not isinstance(spec, str):
        raise ValueError(f"spec must be a string KIND:PATH, got {type(spec).__name__}")
    kind, sep, path = spec.partition(":")
    kinds = ", ".join(f"{k}:PATH ({v})" for k, v in WEIGHT_KINDS.items())
    if not sep or kind not in WEIGHT_KINDS:
        raise ValueError(f"spec must be KIND:PATH with KIND one of {kinds}; got {spec!r}")
    if not path.strip():
        raise ValueError(f"spec {spec!r} names no file after {kind + ':'!r}")
    return kind, os.path.expanduser(path)
