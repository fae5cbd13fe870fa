"""Training: dense warm-up -> index initialization (k-means) -> [frozen: quantizer fit] -> joint epochs
-> [decoder epochs].

One optimizer for the whole model; the phase decides which loss terms run, so gradients reach only the
parts a phase trains. With `train.joint_epochs=0` the run is a plain dual encoder (dense phase only).
The decoder phase starts from the best epoch so far (the towers' validation peak), fixes its SIDs and
trains the decoder alone on its own learning-rate schedule: the towers over-fit long before the decoder
has learned the SIDs. `train.patience` ends the joint or decoder phase early.
Everything needed to continue after an interruption is saved after every epoch.
"""

from __future__ import annotations

import json
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from dgi.config import Config, auto_codebook_sizes
from dgi.training.chains import Chains
from dgi.training.context_cache import ContextCache
from dgi.training.text import TrainableText
from dgi.data.corpus import EncodedCorpus
from dgi.device import autocast, autocast_dtype, resolve_device, set_threads
from dgi.training.distributed import ProcessGroup
from dgi.evaluation.evaluate import index_statistics
from dgi.io import append_jsonl, write_lines
from dgi.evaluation.metrics import popularity_buckets
from dgi.nets.model import Batch, DGIModel, Losses, NextTokenDetail
from dgi.retriever import Retriever
from dgi.training.run import RunDirectory
from dgi.training.schedules import exponential_anneal, warmup_linear_decay
from dgi.nets.towers import pca_projection
from dgi.training.validation import LevelStats, validation_report


@dataclass
class Phase:
    name: str        # "dense" | "quantizer" | "joint" | "decoder"
    epochs: int


def training_phases(config: Config) -> list[Phase]:
    t = config.train
    phases = [Phase("dense", t.dense_epochs)]
    if not t.joint_epochs:  # a dual encoder: no index, no quantizer fit
        return phases
    if config.quantizer.gradient == "frozen":
        phases.append(Phase("quantizer", t.quantizer_epochs))
    phases += [Phase("joint", t.joint_epochs), Phase("decoder", t.decoder_epochs)]
    return [phase for phase in phases if phase.epochs]


def build_model(config: Config, corpus: EncodedCorpus) -> DGIModel:
    sizes = config.quantizer.codebook_sizes or auto_codebook_sizes(len(corpus.item_ids), config.quantizer.levels)
    return DGIModel(config, corpus.item_embeddings.shape[1], sizes, len(corpus.item_ids))


class Trainer:
    """Trains one run; under torchrun, one Trainer per process (`group`), process 0 validating and writing."""

    def __init__(self, config: Config, corpus: EncodedCorpus, run: RunDirectory, progress: bool = True,
                 group: ProcessGroup | None = None) -> None:
        self.config, self.corpus, self.run = config, corpus, run
        if config.train.threads:
            set_threads(config.train.threads)
        torch.manual_seed(config.train.seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        # Deterministic mode also NaN-fills every new tensor (a guard for kernels that read uninitialized
        # memory, which ours do not): 9,550 fills, ~6% of a Beauty step's time, for nothing.
        torch.utils.deterministic.fill_uninitialized_memory = False
        self.device = resolve_device(config.train.device)
        self.group = group or ProcessGroup.from_environment(self.device)
        if self.group.distributed and self.device.type == "cuda":
            self.device = torch.device("cuda", self.group.local_rank)
        self.progress = progress and self.group.is_main
        self.autocast_dtype = autocast_dtype(self.device, config.train.precision)
        self.model = build_model(config, corpus)
        self.model.init_projections(*pca_projection(corpus.item_embeddings, config.model.width,
                                                    whiten=config.model.projection_init == "whitened_pca"))
        self.model.to(self.device)
        # What each step calls: the model, or its DistributedDataParallel wrapper (averages gradients). A
        # phase leaves parts of the model unused (the decoder in the dense phase): find_unused_parameters.
        self.step_module: nn.Module = DistributedDataParallel(
            self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=True) if self.group.distributed else self.model
        self.item_embeddings = corpus.item_embeddings.to(self.device)
        self.query_embeddings = corpus.query_embeddings.to(self.device)
        self.text = TrainableText.of(self.model.text_backbone, corpus) if self.model.text_backbone else None
        self.optimizer = self._optimizer()
        self.phases = training_phases(config)
        self.item_grad_norms: list[float] = []  # this epoch's, one per step
        self.step_losses: list[float] = []  # this epoch's total loss per step (mean over processes)
        # the best epoch is chosen among the generative phases' (the dense phase's for a dual encoder)
        self.selectable = {"joint", "decoder"} & {phase.name for phase in self.phases} or {self.phases[-1].name}
        train = corpus.splits["train"]
        self.train_batches = _tensors(train.targets, train.history, train.query_ids)
        self.history_lengths = (self.train_batches[1] >= 0).sum(dim=1)
        # a causal context encoder reads each chain of prefix examples in one pass (see dgi.training.chains)
        self.chains = Chains.of(*self.train_batches) if config.model.context_attention == "causal" else None
        self.buckets = popularity_buckets(corpus.popularity)
        weights = _popularity_weights(corpus.popularity, self.train_batches[0], config.loss.ntp_popularity_power)
        self.ntp_item_weights = weights.to(self.device) if weights is not None else None
        self.train_stats: dict[str, LevelStats] = {}  # this epoch's teacher-forced NTP, per level and bucket
        self.context_cache: ContextCache | None = None  # the decoder phase's frozen contexts
        self.total_steps = sum(phase.epochs * self._steps_per_epoch(phase.name) for phase in self.phases
                               if phase.name != "decoder")  # the decoder phase has a schedule of its own
        self.state = {"epoch": 0, "step": 0, "joint_step": 0, "decoder_step": 0, "index_ready": False,
                      "decoder_ready": False, "best_epoch": None, "best_score": None, "stale_epochs": 0,
                      "train_seconds": 0.0, "train_cpu_seconds": 0.0}

    # ----- public -------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train the remaining epochs; returns the final state (best epoch and score)."""
        epoch_phases = [phase.name for phase in self.phases for _ in range(phase.epochs)]
        while self.state["epoch"] < len(epoch_phases):
            epoch = self.state["epoch"]
            phase = epoch_phases[epoch]
            started, cpu_started = time.perf_counter(), time.process_time()
            self._refresh_text()  # a trainable backbone's first epoch (or the first after a resume)
            self._prepare(phase)
            self.group.sync_parameters(self.model)  # process 0's k-means index / reloaded best epoch everywhere
            losses = self._run_epoch(phase, epoch, len(epoch_phases))
            if self.text is not None and phase in ("dense", "joint"):
                self.text.stale = True
                self._refresh_text()  # validation and the next epoch read the backbone as trained now
            self.state["train_seconds"] += time.perf_counter() - started
            # CPU time of this process: the honest cost when other jobs share the machine's cores
            self.state["train_cpu_seconds"] = self.state.get("train_cpu_seconds", 0.0) + time.process_time() - cpu_started
            if self.group.is_main:  # validation, selection, log and checkpoint: process 0 alone
                record = self._epoch_record(epoch, phase, losses, time.perf_counter() - started)
                self._select(record, selectable=phase in self.selectable)
                self.state["epoch"] = self._next_epoch(epoch, epoch_phases)
                self._checkpoint(record)
            self.state = self.group.broadcast(self.state)
        return self.state

    def _next_epoch(self, epoch: int, epoch_phases: list[str]) -> int:
        """epoch + 1, or the first epoch of the next phase once `train.patience` epochs brought nothing."""
        patience, phase = self.config.train.patience, epoch_phases[epoch]
        following = epoch + 1
        if patience and phase in self.selectable and self.state["stale_epochs"] >= patience:
            while following < len(epoch_phases) and epoch_phases[following] == phase:
                following += 1
        if following < len(epoch_phases) and epoch_phases[following] != phase:
            self.state["stale_epochs"] = 0
        return following

    def resume(self) -> None:
        """Restore weights, optimizer, RNG and progress from the run directory's last checkpoint."""
        extra, state = self.run.load_checkpoint(self.model)
        if self.group.is_main:
            self._truncate_log(state["epoch"])
        self.model.to(self.device)  # frozen codes are loaded as a new CPU buffer
        configured = [{key: group[key] for key in ("weight_decay", "base_lr")} for group in self.optimizer.param_groups]
        saved = state.pop("param_groups")
        if len(saved) != len(configured):
            raise ValueError(f"{self.run.path}: the checkpoint's optimizer has {len(saved)} parameter groups but "
                             f"this config builds {len(configured)}; train.joint_decoder_lr (own groups for the "
                             "decoder and heads) cannot be switched on or off when a run resumes")
        self.optimizer.load_state_dict(_unflatten_optimizer(extra, saved))
        for group, settings in zip(self.optimizer.param_groups, configured):
            group.update(settings)  # the run's config decides rates and decay, not the checkpoint's copy
        torch.set_rng_state(extra["rng.torch"])
        self.state = {**self.state, **state}  # runs from before a state key existed start it at its default
        if self.text is not None:
            self.text.stale = True  # the tables were embedded by the backbone's initial weights
        if len(self.model.frozen_codes):
            self.model.quantizer.requires_grad_(False)

    # ----- phases -------------------------------------------------------------------------------
    def _prepare(self, phase: str) -> None:
        if phase != "dense" and not self.state["index_ready"]:
            with torch.no_grad():
                vectors = self.model.catalog_vectors(self.item_embeddings)
            self.model.quantizer.kmeans_init(vectors, self.config.quantizer.kmeans_iterations, self.config.train.seed)
            self.state["index_ready"] = True
        if phase == "joint" and self.config.quantizer.gradient == "frozen" and not len(self.model.frozen_codes):
            self._fix_codes()
            self.model.quantizer.requires_grad_(False)
        if phase == "decoder" and not self.state["decoder_ready"]:
            if self.run.best_file.exists():  # the towers' validation peak
                RunDirectory.load_weights(self.run.best_file, self.model)
                self.model.to(self.device)
                if self.text is not None:  # and the backbone of that epoch
                    self.text.stale = True
                    self._refresh_text()
            if not len(self.model.frozen_codes):
                self._fix_codes()
            self.state["decoder_ready"] = True
        if phase == "decoder" and self.context_cache is None:
            self.context_cache = self._cache_contexts()

    def _refresh_text(self) -> None:
        """Re-embed every item and query text with a trainable backbone whose weights changed."""
        if self.text is None or not self.text.stale:
            return
        started = time.perf_counter()
        with autocast(self.device, self.autocast_dtype):
            self.item_embeddings, self.query_embeddings = self.text.embed_all(self.model.text_backbone, self.device)
        self.text.refresh_seconds += time.perf_counter() - started

    def _cache_contexts(self) -> ContextCache | None:
        """Every training example's frozen context, once for the whole decoder phase (when it fits)."""
        targets, history, query_ids = self.train_batches
        if not ContextCache.fits(len(targets), history.shape[1], self.config.model.width):
            return None
        self.model.eval()
        with autocast(self.device, self.autocast_dtype):
            return ContextCache.build(self.model, Batch(*(t.to(self.device) for t in self.train_batches)),
                                      self.item_embeddings, self.query_embeddings)

    def _fix_codes(self) -> None:
        with torch.no_grad():
            self.model.frozen_codes = self.model.quantizer.encode(self.model.catalog_vectors(self.item_embeddings))

    def _run_epoch(self, phase: str, epoch: int, n_epochs: int) -> dict[str, float]:
        self.model.train_decoder_only() if phase == "decoder" else self.model.train()
        sums: dict[str, float] = defaultdict(float)
        self.item_grad_norms = []
        levels = self.model.quantizer.levels
        self.train_stats = {name: LevelStats(len(self.buckets.names), levels) for name in ("ntp_loss", "ntp_accuracy")}
        batches = list(self._batches(phase, epoch))
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{n_epochs} {phase}", disable=not self.progress, leave=False)
        self.step_losses = []
        for batch in bar:
            self._set_learning_rate(phase)
            with autocast(self.device, self.autocast_dtype):
                output = self._losses(phase, batch)
            terms = output.terms
            total = sum(terms.values()) if phase == "quantizer" else self.model.weighted_total(terms)
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.item_grad_norms.append(self._item_tower_grad_norm())
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.grad_clip)
            self.optimizer.step()
            self.state["step"] += 1
            self.state["joint_step"] += phase == "joint"
            self.state["decoder_step"] += phase == "decoder"
            values = self.group.mean_of([*(value.item() for value in terms.values()), total.item()])
            for name, value in zip([*terms, "total"], values):  # over every process's rows
                sums[name] += value
            self.step_losses.append(values[-1])
            if output.next_token is not None:
                self._add_next_token_stats(output.next_token)
            bar.set_postfix(loss=f"{total.item():.3f}")
        return {name: value / max(len(batches), 1) for name, value in sums.items()}

    def _add_next_token_stats(self, detail: NextTokenDetail) -> None:
        bucket = self.buckets.bucket_of_item[detail.targets.cpu().numpy()]
        self.train_stats["ntp_loss"].add(detail.loss, bucket)
        self.train_stats["ntp_accuracy"].add(detail.correct, bucket)

    def _item_tower_grad_norm(self) -> float:
        """L2 norm of this step's gradient on the item tower (and ID vectors), before clipping: how much
        training signal reaches the item representations (the paper's Figure 3, Gumbel vs STE)."""
        towers = [self.model.item_tower] + ([self.model.item_id_embedding] if self.model.item_id_embedding else [])
        grads = [p.grad.norm() for tower in towers for p in tower.parameters() if p.grad is not None]
        return float(torch.stack(grads).norm()) if grads else 0.0

    def _losses(self, phase: str, batch: Batch | Tensor) -> Losses:
        """The step's losses through `step_module` (so that DDP sees the forward pass)."""
        if phase == "quantizer":  # two-stage: fit codebooks to the (fixed) item vectors
            return self.step_module("quantizer", batch, self.item_embeddings, self.query_embeddings)
        context = self.context_cache.context(batch.rows) if phase == "decoder" and self.context_cache else None
        text = self.text.fresh(batch) if self.text is not None and phase != "decoder" else None
        return self.step_module(phase, batch, self.item_embeddings, self.query_embeddings, self.tau,
                                self._ntp_weights(batch), context,
                                self.group.gather if self.group.distributed else None, text)

    def _ntp_weights(self, batch: Batch) -> Tensor | None:
        return self.ntp_item_weights[batch.targets] if self.ntp_item_weights is not None else None

    @property
    def tau(self) -> float:
        q = self.config.quantizer
        joint_steps = self.config.train.joint_epochs * self._steps_per_epoch("joint")
        return exponential_anneal(self.state["joint_step"] / max(joint_steps - 1, 1), q.tau_start, q.tau_end)

    def _batches(self, phase: str, epoch: int) -> Iterator[Batch | Tensor]:
        generator = torch.Generator().manual_seed(self.config.train.seed * 100_003 + epoch)
        size = self.config.train.batch_size
        if phase == "quantizer":
            order = torch.randperm(len(self.corpus.item_ids), generator=generator)
            yield from (self.group.shard(chunk).to(self.device) for chunk in order.split(size))
            return
        targets, history, query_ids = self.train_batches
        pool = self.config.train.length_bucketing
        if self.chains is not None:
            chunks = self.chains.batches(size, pool, generator)
        else:
            order = torch.randperm(len(targets), generator=generator)
            chunks = length_bucketed(order, self.history_lengths, size, pool, generator)
        for chunk in chunks[: self.config.train.max_steps_per_epoch]:
            if len(chunk) > 1:  # in-batch negatives need at least two rows
                # every process: its share of the same global batch (a contiguous one keeps chains whole)
                rows = self.group.shard(chunk, contiguous=self.chains is not None)
                sequence_of = self.chains.sequence_of(rows).to(self.device) if self.chains is not None else None
                yield Batch(*(tensor[rows].to(self.device) for tensor in (targets, history, query_ids)),
                            rows=rows.to(self.device), sequence_of=sequence_of)

    def _steps_per_epoch(self, phase: str) -> int:
        n = len(self.corpus.item_ids) if phase == "quantizer" else len(self.corpus.splits["train"].targets)
        cap = self.config.train.max_steps_per_epoch if phase != "quantizer" else None
        return min(-(-n // self.config.train.batch_size), cap or n)

    # ----- optimization ---------------------------------------------------------------------------
    def _optimizer(self) -> torch.optim.Optimizer:
        t = self.config.train
        backbone = list(self.model.text_backbone.parameters()) if self.model.text_backbone is not None else []
        own_groups = {id(p) for p in [*self.model.quantizer.parameters(), *backbone]}
        decoder = {id(p) for p in self.model.decoder_parameters()} if t.joint_decoder_lr is not None else set()
        named = [(name, p) for name, p in self.model.named_parameters() if id(p) not in own_groups]
        groups = [*_decay_groups([(n, p) for n, p in named if id(p) not in decoder], t.lr, t.weight_decay),
                  {"params": list(self.model.quantizer.parameters()), "weight_decay": 0.0, "base_lr": t.quantizer_lr}]
        if backbone:  # a pretrained encoder is fine-tuned at a far smaller rate than the towers learn
            groups.append({"params": backbone, "weight_decay": t.weight_decay, "base_lr": t.backbone_lr})
        if decoder:  # last, so a run without them keeps its groups' order (and its checkpoints resume)
            groups += _decay_groups([(n, p) for n, p in named if id(p) in decoder], t.joint_decoder_lr, t.weight_decay)
        return torch.optim.AdamW(groups, lr=t.lr, fused=True)  # one kernel for all parameters (CPU and CUDA)

    def _set_learning_rate(self, phase: str) -> None:
        t = self.config.train
        if phase == "decoder":  # only the decoder has gradients: one rate for all its groups
            steps = t.decoder_epochs * self._steps_per_epoch("decoder")
            rate = t.decoder_lr * warmup_linear_decay(self.state["decoder_step"], t.warmup_steps, steps)
            for group in self.optimizer.param_groups:
                group["lr"] = rate
            return
        multiplier = warmup_linear_decay(self.state["step"], t.warmup_steps, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * multiplier

    # ----- logging and checkpoints ------------------------------------------------------------------
    def _epoch_record(self, epoch: int, phase: str, losses: dict[str, float], seconds: float) -> dict:
        model = self.model
        record = {"epoch": epoch + 1, "phase": phase, "seconds": round(seconds, 2), "step": self.state["step"],
                  "lr": self.optimizer.param_groups[0]["lr"], "tau": self.tau, "losses": losses,
                  "step_loss": [float(f"{value:.5g}") for value in self.step_losses], "processes": self.group.world,
                  "item_grad_norm": [float(f"{norm:.5g}") for norm in self.item_grad_norms],
                  "autocast": str(self.autocast_dtype).removeprefix("torch.") if self.autocast_dtype else None}
        if self.text is not None:  # seconds spent re-embedding the catalogue and queries so far
            record["text_refresh_seconds"] = round(self.text.refresh_seconds, 2)
        if model.quantizer.scale is not None:
            record["gamma_quantizer"] = model.quantizer.scale().item()
        if model.heads.scales is not None:
            record["gamma_heads"] = [scale().item() for scale in model.heads.scales]
        if self.state["index_ready"]:
            retriever = self.retriever()
            record["index"] = index_statistics(retriever.index)
            self._warn_on_collapse(record["index"]["collisions"]["unique_share"])
        else:
            retriever = Retriever.from_model(model, self.item_embeddings, self.corpus.item_ids, [], self.config.search,
                                             indexed=False)
        if self.train_stats:
            record["train"] = {name: stat.summary(self.buckets.names) for name, stat in self.train_stats.items()}
        record["valid"] = validation_report(retriever, self.corpus, "valid", self.config.train.eval_examples,
                                            generative=self.state["index_ready"] and phase != "dense",
                                            diagnostics=self.config.train.diagnostics)
        return record

    def _warn_on_collapse(self, unique_share: float) -> None:
        """A falling share of unique SIDs is the joint objective's degenerate solution, not progress."""
        previous = self.state.get("unique_share")
        if previous is not None and unique_share < 0.8 * previous:
            warnings.warn(f"share of items with a unique SID fell from {previous:.3f} to {unique_share:.3f}: "
                          "codebook collapse? lower train.quantizer_lr or raise loss.diversity", stacklevel=2)
        self.state["unique_share"] = unique_share

    def retriever(self) -> Retriever:
        return Retriever.from_model(self.model, self.item_embeddings, self.corpus.item_ids,
                                    [item.text for item in self.corpus.dataset.items], self.config.search,
                                    item_counts=torch.from_numpy(self.corpus.popularity))

    def _select(self, record: dict, selectable: bool) -> None:
        """Keep this epoch's weights and index as the best if its validation score is the best so far."""
        score = _selection_score(record, self.config.train.select_metric)
        record["selected_score"] = score
        if not selectable:
            return
        if self.state["best_score"] is None or score > self.state["best_score"]:
            self.state["best_score"], self.state["best_epoch"], self.state["stale_epochs"] = score, record["epoch"], 0
            self.run.save_weights(self.run.best_file, self.model)
            if self.state["index_ready"]:
                self.retriever().index.save(self.run.index_file)
        else:
            self.state["stale_epochs"] += 1

    def _checkpoint(self, record: dict) -> None:
        append_jsonl(self.run.log_file, record)
        tensors, groups = _flatten_optimizer(self.optimizer)
        tensors["rng.torch"] = torch.get_rng_state()  # CUDA streams are not restored: resume on GPU is not bit-exact
        self.run.save_checkpoint(self.model, tensors, {**self.state, "param_groups": groups})
        self.model.train()

    def _truncate_log(self, epochs_done: int) -> None:
        """Drop log lines of epochs after the checkpoint (a crash after the log line, before the
        checkpoint): the resumed run writes them again."""
        if not self.run.log_file.exists():
            return
        lines = self.run.log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        kept = []
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line torn by a crash mid-write: it and what follows go
                warnings.warn(f"{self.run.log_file}:{number}: unreadable log line dropped (written again on resume)",
                              stacklevel=2)
                break
            if record["epoch"] <= epochs_done:
                kept.append(line)
        if len(kept) != len(lines):
            write_lines(self.run.log_file, kept, "\n")


def length_bucketed(order: Tensor, lengths: Tensor, batch_size: int, pool_batches: int,
                    generator: torch.Generator) -> list[Tensor]:
    """Batches of `order` (a permutation) whose rows have similar `lengths`, in random batch order.

    Each pool of `pool_batches` consecutive batches is sorted by length (stably, so ties keep the random
    order); pools stay random samples of the data, so every batch still sees a broad mix of targets.
    """
    if pool_batches > 1:
        pools = order.split(batch_size * pool_batches)
        order = torch.cat([pool[torch.sort(lengths[pool], stable=True).indices] for pool in pools])
    batches = order.split(batch_size)
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()] if pool_batches > 1 \
        else list(batches)


def _decay_groups(named: list[tuple[str, nn.Parameter]], rate: float, weight_decay: float) -> list[dict]:
    """Two AdamW groups at `rate`: the matrices with `weight_decay`, then biases, norms, embeddings and
    position vectors without it."""
    decay, no_decay = [], []
    for name, parameter in named:
        (decay if parameter.ndim >= 2 and "embedding" not in name and "positions" not in name else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay, "base_lr": rate},
            {"params": no_decay, "weight_decay": 0.0, "base_lr": rate}]


def _popularity_weights(popularity: np.ndarray, train_targets: Tensor, power: float) -> Tensor | None:
    """Per item: training count ** -power, scaled so that the mean weight over training examples is 1
    (the loss keeps its scale; with power 1 every item weighs the same in total)."""
    if not power:
        return None
    weights = torch.from_numpy(np.maximum(popularity, 1).astype(np.float64)) ** -power
    weights = weights / weights[train_targets].mean()
    return weights.float()


def _selection_score(record: dict, metric: str) -> float:
    valid = record["valid"]
    source = valid.get("generative") or valid["dense"]
    return float(source[metric])


def _tensors(*arrays: np.ndarray) -> tuple[Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(array)).long() for array in arrays)


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list[dict]]:
    state = optimizer.state_dict()
    tensors = {f"optim.{param}.{key}": value for param, values in state["state"].items()
               for key, value in values.items()}
    return tensors, state["param_groups"]


def _unflatten_optimizer(tensors: dict[str, Tensor], groups: list[dict]) -> dict:
    state: dict[int, dict[str, Tensor]] = defaultdict(dict)
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, param, key = name.split(".", 2)
            state[int(param)][key] = value
    return {"state": dict(state), "param_groups": groups}
