"""A trained model plus its SID index: generative search (beam search -> SID buckets -> cosine) and dense search."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from dgi.config import SearchConfig
from dgi.data import Item
from dgi.data.encoders import SentenceTransformerEncoder, TextEncoder
from dgi.device import autocast, autocast_dtype
from dgi.search.index import SIDIndex
from dgi.nets.losses import next_token_hits, next_token_per_example
from dgi.nets.model import DGIModel
from dgi.model_dir import EncoderSpec, ModelFiles
from dgi.search.beam import RULES, Beams, Ranking, beam_search, rank_items
from dgi.search.prior import PopularityPrior
from dgi.nets.towers import Context


@dataclass
class SearchHit:
    item_id: str
    text: str
    sid: tuple[int, ...]
    beam_score: float
    cosine: float
    score: float


SEARCH_RULES = (*RULES, "dense")  # the generative ranking rules, and the dense path


class Retriever:
    """Search over a catalogue of item vectors: the model's context encoder and decoder, the SID index."""

    def __init__(self, model: DGIModel, index: SIDIndex | None, item_vectors: Tensor, item_ids: Sequence[str],
                 item_texts: Sequence[str], search: SearchConfig, encoder: TextEncoder | None = None,
                 item_counts: Tensor | None = None) -> None:
        """`item_counts` [n_items]: training interactions per item, for `search.popularity_correction`."""
        self.model = model.eval()
        self.index = index
        self.item_counts = None if item_counts is None else torch.as_tensor(item_counts, dtype=torch.long).cpu().clone()
        if self.item_counts is not None and self.item_counts.shape != (len(item_ids),):
            raise ValueError(f"item_counts has shape {tuple(self.item_counts.shape)} for {len(item_ids)} items")
        self._prior: PopularityPrior | None = None  # built on first use, dropped when the catalogue changes
        self.item_vectors = item_vectors.to(getattr(torch, search.item_vectors))
        self.item_ids = list(item_ids)
        self.item_texts = list(item_texts)
        self.search_config = search
        self.encoder = encoder
        self.device = item_vectors.device  # the model's; beams and rankings come back on the CPU
        self._cpu_item_vectors = self.item_vectors.cpu()  # ranking inside SID buckets runs on the CPU
        self._position = {item_id: i for i, item_id in enumerate(self.item_ids)}

    @classmethod
    def from_model(cls, model: DGIModel, item_embeddings: Tensor, item_ids: Sequence[str], item_texts: Sequence[str],
                   search: SearchConfig, encoder: TextEncoder | None = None, indexed: bool = True,
                   item_counts: Tensor | None = None) -> Retriever:
        """The catalogue's item vectors, each item indexed with its hard SID (the fixed table of a frozen
        quantizer); `indexed=False` leaves the index out (the dense path only)."""
        model.eval()
        with torch.no_grad():
            vectors = model.catalog_vectors(item_embeddings)
            index = None
            if indexed:
                codes = model.frozen_codes if len(model.frozen_codes) else model.quantizer.encode(vectors)
                index = SIDIndex.build(codes, model.quantizer.codebook_sizes)
        return cls(model, index, vectors, item_ids, item_texts, search, encoder, item_counts)

    # ----- the self-contained model directory (dgi.model_dir) --------------------------------
    def save(self, path: str | Path, encoder: EncoderSpec | None = None) -> Path:
        """Write a model directory that `load` serves from with no dataset, cache or run files.

        `encoder` describes the text encoder; by default it is fingerprinted from `self.encoder`.
        """
        if encoder is None:
            if self.encoder is None:
                raise ValueError("saving needs the text encoder (to record which one the model expects)")
            encoder = getattr(self.encoder, "spec", None) or EncoderSpec.of(self.encoder)
        trained = self.model.item_id_embedding.num_embeddings if self.model.item_id_embedding is not None else 0
        return ModelFiles(self.model.config, self.model.state_dict(), self.item_vectors.cpu(),
                          None if self.index is None else self.index.codes, self.item_ids, self.item_texts, encoder,
                          self.model.quantizer.codebook_sizes, trained, self.item_counts).write(path)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", encoder: TextEncoder | None = None) -> Retriever:
        """A retriever from a model directory; its text encoder is checked against the fingerprint on first use."""
        files = ModelFiles.read(path)
        model = DGIModel(files.config, files.encoder.dim, list(files.codebook_sizes), files.trained_items)
        model.load_weights(files.weights)
        index = None if files.codes is None else SIDIndex.build(files.codes, files.codebook_sizes)
        # a fine-tuned backbone is part of the weights; a frozen encoder is named by the manifest
        if encoder is None:
            encoder = model.text_backbone if model.text_backbone is not None \
                else SentenceTransformerEncoder(files.encoder.name)
        text = CheckedEncoder(encoder, files.encoder, Path(path))
        vectors = files.item_vectors.to(device)
        if files.config.model.geometry == "cosine":  # unit norm again after the fp16 round trip
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return cls(model.to(device), index, vectors, files.item_ids, files.item_texts, files.config.search, text,
                   files.item_counts)

    # ----- batched search over integer inputs --------------------------------------------------
    @torch.no_grad()
    def context(self, history: Tensor, query_embeddings: Tensor | None, has_query: Tensor) -> Context:
        queries = query_embeddings.to(self.device) if query_embeddings is not None else None
        return self.model.encode_context(history.to(self.device), queries, has_query.to(self.device),
                                         self.item_vectors)

    @torch.no_grad()
    def beams(self, context: Context, beam_size: int, constrained: bool = True) -> Beams:
        """Beam search over the SID tree with the configured level weights and popularity correction;
        `constrained=False` searches every code sequence with the decoder's own log-probs, neither weighted
        nor corrected: what the decoder generates with no SID table (the invalid-SID diagnostic)."""
        if self.index is None:
            raise ValueError("this retriever has no SID index yet (dense path only)")
        memory = self.model.decoder.memory(context.memory, context.padding)  # once for every level
        dtype = autocast_dtype(self.device, self.search_config.precision)
        steps = self.model.incremental_steps(context, memory)  # each step computes the newest position only
        weights = self.search_config.level_weights if constrained else None
        if weights is not None and len(weights) != self.index.depth:
            raise ValueError(f"search.level_weights has {len(weights)} entries for an index of {self.index.depth} levels")
        correction = self.search_config.popularity_correction if constrained else 0.0
        prior = self.popularity_prior() if correction else None

        def step(prefix: Tensor, parents: Tensor | None) -> Tensor:
            with autocast(self.device, dtype):
                logp = steps(prefix.to(self.device), None if parents is None else parents.to(self.device)).float()
            logp = (logp if weights is None else logp * weights[prefix.shape[2]]).cpu()
            return logp if prior is None else logp - correction * prior.log_conditional(prefix)

        return beam_search(step, len(context.vector), self.index, beam_size, constrained)

    def popularity_prior(self) -> PopularityPrior:
        """The SID tree's training-popularity prior (`search.popularity_correction`)."""
        if self.item_counts is None:
            raise ValueError("search.popularity_correction needs the items' training counts, which this model "
                             "directory lacks: re-export it from its run (`dgi export RUN`)")
        if self._prior is None:
            self._prior = PopularityPrior(self.index, self.item_counts)
        return self._prior

    @torch.no_grad()
    def generate(self, history: Tensor, query_embeddings: Tensor | None, has_query: Tensor, k: int,
                 rule: str | None = None, beam_size: int | None = None) -> Ranking:
        """Constrained beam search, then the ranking rule inside/over the SID buckets."""
        return self.generate_from_context(self.context(history, query_embeddings, has_query), k, rule, beam_size)

    @torch.no_grad()
    def generate_from_context(self, context: Context, k: int, rule: str | None = None,
                              beam_size: int | None = None) -> Ranking:
        config = self.search_config
        rule = rule or config.rule
        beam_size = beam_size or (config.rerank_beam_size if rule == "rerank" else config.beam_size)
        return self.rank(context, self.beams(context, beam_size), k, rule)

    def rank(self, context: Context, beams: Beams, k: int, rule: str) -> Ranking:
        """The ranking rule over the items of `beams`' SID buckets."""
        return rank_items(beams, self.index, context.vector.cpu(), self._cpu_item_vectors, k, rule,
                          self.search_config.fusion_weight)

    @torch.no_grad()
    def dense(self, history: Tensor, query_embeddings: Tensor | None, has_query: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """The same model's dense path: exact search of z_q against every item vector."""
        return self.dense_from_context(self.context(history, query_embeddings, has_query), k)

    @torch.no_grad()
    def dense_from_context(self, context: Context, k: int, chunk: int = 1 << 16) -> tuple[Tensor, Tensor]:
        """Exact top k by cosine, over `chunk` items at a time: the score matrix of a batch never spans a
        large catalogue, and float16 item vectors are widened to float32 one chunk at a time."""
        k = min(k, len(self.item_vectors))
        best_scores, best_items = [], []
        for start in range(0, len(self.item_vectors), chunk):
            part = self.item_vectors[start:start + chunk].to(context.vector.dtype)
            scores, items = (context.vector @ part.T).topk(min(k, len(part)), dim=1)
            best_scores.append(scores)
            best_items.append(items + start)
        if len(best_scores) == 1:
            return best_items[0].cpu(), best_scores[0].cpu()
        scores, columns = torch.cat(best_scores, dim=1).topk(k, dim=1)
        return torch.cat(best_items, dim=1).gather(1, columns).cpu(), scores.cpu()

    @torch.no_grad()
    def teacher_forced(self, context: Context, codes: Tensor) -> tuple[Tensor, Tensor]:
        """Next-token loss and argmax hit [B, m] per level of SIDs `codes` [B, m], fed the hard codewords
        the beam search would feed: what generation faces, unlike training's soft inputs."""
        codes = codes.to(self.device)
        logits = self.model.level_logits(context, self.model.quantizer.codewords(codes))
        loss = next_token_per_example(logits, codes)
        correct = next_token_hits(logits, codes)
        return loss.cpu(), correct.cpu()

    # ----- text API ----------------------------------------------------------------------------
    def search(self, queries: Sequence[str | None], histories: Sequence[Sequence[str]], k: int = 10,
               rule: str | None = None, beam_size: int | None = None) -> list[list[SearchHit]]:
        """Top-k items for each (query text, history of item ids) pair; either part may be empty.

        `rule` is a generative ranking rule (default: the configured one) or "dense": exact cosine
        search of the context vector over every item, the model's dense path (a dual encoder's only one).
        """
        if len(queries) != len(histories):
            raise ValueError(f"{len(queries)} queries but {len(histories)} histories")
        if k < 1 or (beam_size is not None and beam_size < 1):
            raise ValueError(f"k and beam_size must be >= 1 (got k={k}, beam_size={beam_size})")
        if rule is not None and rule not in SEARCH_RULES:
            raise ValueError(f"unknown rule {rule!r}: one of {', '.join(SEARCH_RULES)}")
        history, query_embeddings, has_query = self._encode_inputs(queries, histories)
        if self.index is None or rule == "dense":
            return self._dense_hits(*self.dense(history, query_embeddings, has_query, k))
        ranking = self.generate(history, query_embeddings, has_query, k, rule, beam_size)
        results = []
        for row in range(len(queries)):
            hits = []
            for col, item in enumerate(ranking.items[row].tolist()):
                if item < 0:
                    break
                hits.append(SearchHit(self.item_ids[item], self.item_texts[item], tuple(self.index.codes[item].tolist()),
                                      float(ranking.beam_scores[row, col]), float(ranking.cosines[row, col]),
                                      float(ranking.scores[row, col])))
            results.append(hits)
        return results

    def _dense_hits(self, items: Tensor, scores: Tensor) -> list[list[SearchHit]]:
        return [[SearchHit(self.item_ids[item], self.item_texts[item], (), float("nan"), score, score)
                 for item, score in zip(row_items.tolist(), row_scores.tolist())]
                for row_items, row_scores in zip(items, scores)]

    def _encode_inputs(self, queries: Sequence[str | None], histories: Sequence[Sequence[str]]) -> tuple[Tensor, Tensor | None, Tensor]:
        max_history = self.model.config.data.max_history
        history = torch.full((len(histories), max_history), -1, dtype=torch.long)
        for row, items in enumerate(histories):
            unknown = [item for item in items if item not in self._position]
            if unknown:
                raise KeyError(f"unknown item id(s) in history {row}: {', '.join(map(str, unknown[:5]))}")
            recent = [self._position[item] for item in items][-max_history:]
            if recent:
                history[row, -len(recent):] = torch.tensor(recent)
        has_query = torch.tensor([bool(q and q.strip()) for q in queries], dtype=torch.bool)
        query_embeddings = None
        if has_query.any():
            if self.encoder is None:
                raise ValueError("query text given but this retriever has no text encoder")
            texts = [q if q and q.strip() else "" for q in queries]
            query_embeddings = torch.from_numpy(self.encoder.encode(texts))
        return history, query_embeddings, has_query

    def add_items(self, items: Sequence[Item]) -> None:
        """Index new items without retraining: encode their text, quantize, insert into the SID table."""
        duplicates = [item.id for item in items if item.id in self._position]
        if duplicates:
            raise ValueError(f"items already indexed: {', '.join(duplicates[:5])}")
        if self.encoder is None:
            raise ValueError("adding items needs the text encoder")
        embeddings = torch.from_numpy(self.encoder.encode([item.text for item in items])).to(self.device)
        with torch.no_grad():
            vectors = self.model.item_vectors(embeddings)
            if self.index is not None:
                self.index.add_items(self.model.quantizer.encode(vectors).cpu())
        self.item_vectors = torch.cat([self.item_vectors, vectors.to(self.item_vectors.dtype)])
        self._cpu_item_vectors = self.item_vectors.cpu()
        if self.item_counts is not None:  # new items have no training interactions
            self.item_counts = torch.cat([self.item_counts, self.item_counts.new_zeros(len(items))])
        self._prior = None
        for item in items:
            self._position[item.id] = len(self.item_ids)
            self.item_ids.append(item.id)
            self.item_texts.append(item.text)

    def remove_items(self, item_ids: Sequence[str]) -> None:
        """Drop items from the catalogue and the SID table (positions after them move down)."""
        unknown = [item_id for item_id in item_ids if item_id not in self._position]
        if unknown:
            raise KeyError(f"unknown item id(s): {', '.join(map(str, unknown[:5]))}")
        keep = torch.ones(len(self.item_ids), dtype=torch.bool)
        keep[[self._position[item_id] for item_id in item_ids]] = False
        if self.index is not None:
            self.index.keep_items(keep)
        self.item_vectors = self.item_vectors[keep.to(self.item_vectors.device)]
        self._cpu_item_vectors = self.item_vectors.cpu()
        if self.item_counts is not None:
            self.item_counts = self.item_counts[keep]
        self._prior = None
        kept = keep.tolist()
        self.item_ids = [item_id for item_id, k in zip(self.item_ids, kept) if k]
        self.item_texts = [text for text, k in zip(self.item_texts, kept) if k]
        self._position = {item_id: i for i, item_id in enumerate(self.item_ids)}

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._position

    def __len__(self) -> int:
        return len(self.item_ids)

    def item(self, item_id: str) -> tuple[str, tuple[int, ...]]:
        """(text, SID) of an indexed item; KeyError when it is not indexed."""
        position = self._position[item_id]
        sid = tuple(self.index.codes[position].tolist()) if self.index is not None else ()
        return self.item_texts[position], sid


class CheckedEncoder:
    """A text encoder that must embed like the one the model was trained with (checked on first use)."""

    def __init__(self, encoder: TextEncoder, spec: EncoderSpec, source: Path) -> None:
        self.encoder, self.spec, self.source = encoder, spec, source
        self.name = encoder.name
        self._checked = False

    def encode(self, texts: Sequence[str]):
        if not self._checked:
            self.spec.check(self.encoder, self.source)
            self._checked = True
        return self.encoder.encode(texts)
