"""Image datasets on disk: discovery, metadata, decoding and batch streaming."""

from .dataset import Dataset, open_dataset
from .images import SkipImage, decode_image
from .loader import iter_batches
from .sampling import stratified_subset

__all__ = ["Dataset", "SkipImage", "decode_image", "iter_batches", "open_dataset", "stratified_subset"]
