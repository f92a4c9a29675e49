"""tuwen (图文): Chinese image-text retrieval built on Chinese-CLIP."""


class TuwenError(Exception):
    """An error caused by the user's input or environment; its message is shown as is."""
