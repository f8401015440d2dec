"""Shared fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def torchvision_reference():
    """torchvision, for its Python detection code as a reference (its ops on its own or onnxruntime kernels).

    Skips where torchvision's Python code or onnxruntime is not installed. Tests that compare against
    torchvision's *kernels* use :func:`mrcnn_edu._tv.torchvision_ops` instead (compiled kernels only).
    """
    from mrcnn_edu.references import import_torchvision

    try:
        torchvision, _ = import_torchvision()
    except ImportError as exc:
        pytest.skip(f"torchvision's Python code is not installed here: {exc}")
    return torchvision
