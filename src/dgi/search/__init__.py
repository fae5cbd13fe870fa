"""Generation: constrained beam search over the SID index (the fast kernel and its slow reference)."""
