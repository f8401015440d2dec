"""mrcnn_edu: Mask R-CNN taught stage by stage.

Every stage is a small PyTorch function in a module named after it (``boxes``, ``anchors``, ``nms``,
``roi_align``, ...); ``mrcnn_edu.ops`` gathers the torchvision-compatible operators.
"""

__version__ = "0.1.0"
