"""Chinese-CLIP models: architecture registry, weight sources, tokenisation, preprocessing and encoders.

Knows nothing of HTTP, stores or indexes.
"""
