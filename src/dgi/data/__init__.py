"""Dataset format, validation, synthetic generation and array conversion."""

from dgi.data.arrays import ExampleArrays, to_arrays
from dgi.data.loaders import (
    Dataset,
    embedding_check,
    load_dataset,
    load_examples,
    load_items,
    write_examples,
    write_items,
)
from dgi.data.schema import DataError, Example, Item
from dgi.data.synthetic import generate_synthetic

__all__ = [
    "DataError",
    "Dataset",
    "Example",
    "ExampleArrays",
    "Item",
    "embedding_check",
    "generate_synthetic",
    "load_dataset",
    "load_examples",
    "load_items",
    "to_arrays",
    "write_examples",
    "write_items",
]
