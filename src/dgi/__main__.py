"""`python -m dgi ...` is the `dgi` command; `torchrun --nproc_per_node N -m dgi train ...` trains on N processes."""

from dgi.cli import app

app()
