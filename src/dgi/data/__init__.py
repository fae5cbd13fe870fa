"""Dataset format, validation, synthetic generation and array conversion."""

from dgi.data.arrays import ExampleArrays, to_arrays
from dgi.data.beir import add_indexing_examples, indexing_examples, load_beir
from dgi.data.carve import carve_message, carve_validation
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
    "add_indexing_examples",
    "carve_message",
    "carve_validation",
    "embedding_check",
    "generate_synthetic",
    "indexing_examples",
    "load_beir",
    "load_dataset",
    "load_examples",
    "load_items",
    "to_arrays",
    "write_examples",
    "write_items",
]
