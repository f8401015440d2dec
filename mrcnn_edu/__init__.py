"""mrcnn_edu: Mask R-CNN taught stage by stage.

Every stage is a small PyTorch function in a module named after it (``boxes``, ``anchors``, ``nms``,
``roi_align``, ...); ``mrcnn_edu.ops`` gathers the torchvision-compatible operators; :class:`MaskRCNN`
composes the stages into the trainable model and :class:`Config` holds its settings.
"""

from .config import PRESETS, Config
from .model import MaskRCNN

__version__ = "0.1.0"
__all__ = ["Config", "MaskRCNN", "PRESETS", "__version__"]
