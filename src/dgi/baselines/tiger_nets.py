"""TIGER's seq2seq networks: ours (`TigerSeq2Seq`) and the same model on Hugging Face's T5 blocks.

`T5Seq2Seq` is the known-good-decoder check. A public TIGER reimplementation sat far below the
published recall until it swapped its hand-written transformer for `transformers`' T5. `T5Seq2Seq`
keeps everything of `TigerSeq2Seq` around the blocks (token tables, the query slot, per-level heads,
the search) and replaces only the encoder and decoder stacks with a `T5Model` of the same width,
depth, heads and feed-forward size (T5 v1.1 style: RMS norm, relative position buckets, gated GELU,
no biases). Equal validation at equal steps says our blocks have no such defect; a clear gap says
they do.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import T5Config, T5Model

from dgi.nets.decoder import DecoderBlock


class TigerSeq2Seq(nn.Module):
    """History (and query) -> encoder memory; decoder over SID prefixes -> per-level logits."""

    def __init__(self, codebook_sizes: list[int], text_dim: int, width: int, layers: int, heads: int,
                 max_history: int, dropout: float, ffn_multiplier: int = 4) -> None:
        super().__init__()
        self.codebook_sizes = list(codebook_sizes)
        levels = len(codebook_sizes)
        std = 0.02
        self.code_embeddings = nn.ModuleList(nn.Embedding(size, width) for size in codebook_sizes)
        self.level_embedding = nn.Parameter(torch.randn(levels, width) * std)
        self.position_embedding = nn.Parameter(torch.randn(max(max_history, 1), width) * std)  # 0 = most recent
        self.query_projection = nn.Linear(text_dim, width)
        self.no_query = nn.Parameter(torch.randn(width) * std)
        self.slot_embedding = nn.Parameter(torch.randn(width) * std)  # marks the context slot
        for table in self.code_embeddings:
            nn.init.normal_(table.weight, std=std)
        self.input_dropout = nn.Dropout(dropout)
        stack = (width, layers, heads, ffn_multiplier, dropout)
        self.build_encoder(*stack)
        self.bos = nn.Parameter(torch.randn(width) * std)
        self.decoder_position = nn.Parameter(torch.randn(levels, width) * std)
        self.build_decoder(*stack)
        self.heads = nn.ModuleList(nn.Linear(width, size, bias=False) for size in codebook_sizes)

    # The stacks are the one part a subclass swaps; built where they always were, so a seed gives the same weights.
    def build_encoder(self, width: int, layers: int, heads: int, ffn_multiplier: int, dropout: float) -> None:
        layer = nn.TransformerEncoderLayer(width, heads, ffn_multiplier * width, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(width), enable_nested_tensor=False)

    def build_decoder(self, width: int, layers: int, heads: int, ffn_multiplier: int, dropout: float) -> None:
        self.blocks = nn.ModuleList(DecoderBlock(width, heads, ffn_multiplier, dropout, zero_init=False)
                                    for _ in range(layers))
        self.final_norm = nn.LayerNorm(width)

    def code_vectors(self, codes: Tensor) -> Tensor:
        """[..., j] codes (levels 0..j-1) -> [..., j, d] token embeddings (no level embedding)."""
        return torch.stack([self.code_embeddings[j](codes[..., j]) for j in range(codes.shape[-1])], dim=-2) \
            if codes.shape[-1] else codes.new_zeros(*codes.shape, self.bos.shape[0], dtype=self.bos.dtype)

    def encode(self, history_codes: Tensor, history_mask: Tensor, queries: Tensor | None,
               has_query: Tensor) -> tuple[list[tuple[Tensor, Tensor]], Tensor]:
        """history_codes [B, L, m] (rows where mask is False are ignored), most recent last.

        Returns per decoder block the memory keys/values, and the attend mask [B, 1, 1, 1 + L*m].
        """
        batch, length, levels = history_codes.shape
        tokens = self.code_vectors(history_codes) + self.level_embedding
        tokens = tokens + self.position_embedding[:length].flip(0)[:, None, :]
        tokens = tokens.reshape(batch, length * levels, tokens.shape[-1])
        slot = self.no_query.expand(batch, -1)
        if queries is not None:
            slot = torch.where(has_query[:, None], self.query_projection(queries), slot)
        tokens = torch.cat([(slot + self.slot_embedding)[:, None], tokens], dim=1)
        padding = torch.cat([history_mask.new_zeros(batch, 1), ~history_mask.repeat_interleave(levels, dim=1)], dim=1)
        return self.contextualize(self.input_dropout(tokens), padding)

    def contextualize(self, tokens: Tensor, padding: Tensor) -> tuple[list[tuple[Tensor, Tensor]], Tensor]:
        """The encoder over the context tokens [B, S, d] (padding [B, S] True = padding) -> what `run_decoder` reads."""
        memory = self.encoder(tokens, src_key_padding_mask=padding)
        return [block.memory_key_value(memory) for block in self.blocks], ~padding[:, None, None, :]

    def decode(self, memory_kv: list[tuple[Tensor, Tensor]], attend: Tensor, prefix: Tensor) -> Tensor:
        """prefix [B, W, j] -> hidden [B, W, j + 1, d]; position t predicts level t."""
        batch, beams, depth = prefix.shape
        x = torch.cat([self.bos.expand(batch, beams, 1, -1), self.code_vectors(prefix)], dim=2)
        return self.run_decoder(self.input_dropout(x + self.decoder_position[: depth + 1]), memory_kv, attend)

    def run_decoder(self, x: Tensor, memory_kv: list[tuple[Tensor, Tensor]], attend: Tensor) -> Tensor:
        """The decoder blocks over the beams' inputs x [B, W, T, d] -> hidden [B, W, T, d]."""
        for block, kv in zip(self.blocks, memory_kv):
            x = block(x, kv, attend)
        return self.final_norm(x)

    def level_logits(self, hidden: Tensor, level: int) -> Tensor:
        return self.heads[level](hidden)


class T5Seq2Seq(TigerSeq2Seq):
    """`TigerSeq2Seq` whose encoder and decoder are T5's (`network="t5"` in `TigerBaseline`)."""

    def build_encoder(self, width: int, layers: int, heads: int, ffn_multiplier: int, dropout: float) -> None:
        """One `T5Model` holds both stacks (each with its own final norm)."""
        config = T5Config(vocab_size=1, d_model=width, d_kv=width // heads, d_ff=ffn_multiplier * width,
                          num_layers=layers, num_decoder_layers=layers, num_heads=heads, dropout_rate=dropout,
                          feed_forward_proj="gated-gelu", use_cache=False,
                          eos_token_id=None, pad_token_id=0, decoder_start_token_id=0)  # no text generation here
        self.t5 = T5Model(config)
        # Inputs arrive as embeddings: the stacks never read the one-row token table they share with
        # `shared`, and safetensors refuses to save one tensor under three names.
        self.t5.encoder.embed_tokens = self.t5.decoder.embed_tokens = None

    def build_decoder(self, width: int, layers: int, heads: int, ffn_multiplier: int, dropout: float) -> None:
        """Built with the encoder, in `self.t5`."""

    def contextualize(self, tokens: Tensor, padding: Tensor) -> tuple[Tensor, Tensor]:
        attend = (~padding).long()
        return self.t5.encoder(inputs_embeds=tokens, attention_mask=attend).last_hidden_state, attend

    def run_decoder(self, x: Tensor, memory: Tensor, attend: Tensor) -> Tensor:
        """x [B, W, T, d]: every beam reads its query's encoder states (copied per beam: T5 takes [N, S, d])."""
        batch, beams, steps, width = x.shape
        hidden = self.t5.decoder(inputs_embeds=x.reshape(batch * beams, steps, width),
                                 encoder_hidden_states=memory.repeat_interleave(beams, dim=0),
                                 encoder_attention_mask=attend.repeat_interleave(beams, dim=0)).last_hidden_state
        return hidden.reshape(batch, beams, steps, width)


NETWORKS: dict[str, type[TigerSeq2Seq]] = {"ours": TigerSeq2Seq, "t5": T5Seq2Seq}
