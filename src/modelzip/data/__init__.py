"""Built-in datasets: digits (offline default), Fashion-MNIST, MNIST, character text.

Look-up order for files: the explicit ``root``, ``$MODELZIP_DATA``, ``/usr/share/datasets``.
"""

from .datasets import Split, digits, fashion_mnist, find_root, info, mnist, sentences, text
from .idx import read_idx

__all__ = ["Split", "digits", "fashion_mnist", "mnist", "text", "sentences", "info", "find_root",
           "read_idx"]
