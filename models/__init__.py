"""Chinese-CLIP models: architecture registry, weight sources, preprocessing and batch encoders.

Knows nothing of HTTP, stores or indexes.
"""

from models.factory import LoadedModel, create_model_and_transforms
from models.registry import ARCHS, ArchSpec

__all__ = ["ARCHS", "ArchSpec", "LoadedModel", "create_model_and_transforms"]
