"""mrcnn_edu: Mask R-CNN taught stage by stage.

Every stage is a small PyTorch function in a module named after it (``boxes``, ``anchors``, ``nms``,
``roi_align``, ...); ``mrcnn_edu.ops`` gathers the torchvision-compatible operators; :class:`MaskRCNN`
composes the stages into the trainable model and :class:`Config` holds its settings;
:func:`load_torchvision_maskrcnn` builds it from torchvision's COCO-trained weights (a local file).
"""

from .config import PRESETS, Config
from .model import MaskRCNN
from .pretrained import init_backbone_from_imagenet, load_torchvision_maskrcnn

__version__ = "0.1.0"
__all__ = [
    "Config",
    "MaskRCNN",
    "PRESETS",
    "load_torchvision_maskrcnn",
    "init_backbone_from_imagenet",
    "__version__",
]
