"""`captioning`: a transformer decoder over the fused tokens; teacher forcing, greedy and beam search, BLEU."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import mmcore
from mmcore import Features, HeadOutput

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = range(4)


class Vocabulary:
    """Whitespace word vocabulary with the four special tokens first."""

    def __init__(self, words: Sequence[str]) -> None:
        self.words = list(SPECIALS) + [w for w in dict.fromkeys(w.lower() for w in words) if w not in SPECIALS]
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> list[int]:
        return [BOS, *(self.index.get(w, UNK) for w in text.lower().split()), EOS]

    def decode(self, ids: Sequence[int]) -> str:
        out = []
        for i in ids:
            if i == EOS:
                break
            if i not in (PAD, BOS):
                out.append(self.words[i])
        return " ".join(out)


class CaptionBLEU:
    """BLEU (torchmetrics) of generated token ids against reference ids, decoded through the vocabulary."""

    def __init__(self, vocab: Vocabulary, n_gram: int) -> None:
        from torchmetrics.text import BLEUScore

        self.vocab, self.bleu = vocab, BLEUScore(n_gram=n_gram, smooth=True)

    def to(self, device) -> CaptionBLEU:
        return self

    def reset(self) -> None:
        self.bleu.reset()

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        hypotheses = [self.vocab.decode(row) for row in predictions.tolist()]
        references = [[self.vocab.decode(row)] for row in targets.tolist()]
        self.bleu.update(hypotheses, references)

    def compute(self) -> torch.Tensor:
        return self.bleu.compute()


class DecoderLayer(nn.Module):
    """Causal self-attention (SDPA) + cross-attention to the fused tokens (mmcore_kernels) + feed-forward."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        from mmcore_plugins.fusions._common import MultiHeadCrossAttention

        self.heads = heads
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.self_out = nn.Linear(dim, dim)
        self.cross = MultiHeadCrossAttention(dim, heads, dropout)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.self_out(attended)
        x = x + self.cross(self.norm2(x), memory, memory_mask)
        return x + self.ff(self.norm3(x))


class CaptioningHead(mmcore.Head):
    """Caption decoder: cross-attends to the fused tokens; teacher forcing in training, greedy or beam search to predict.

    ``vocab`` lists the words (specials are added). Targets are caption strings. With targets in
    training mode, predictions are the teacher-forced argmax; otherwise captions are generated
    (``beam_size`` 1 = greedy). Metric: BLEU. Absent fused tokens are masked keys.
    """

    def __init__(
        self, input_dim: int, vocab: list[str], dim: int = 128, heads: int = 4, layers: int = 2,
        max_length: int = 20, beam_size: int = 1, bleu_ngram: int = 4, dropout: float = 0.1,
    ) -> None:
        super().__init__(input_dim)
        if not vocab:
            raise ValueError("vocab must list at least one word")
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        if beam_size < 1 or max_length < 1:
            raise ValueError(f"beam_size and max_length must be at least 1, got {beam_size} and {max_length}")
        self.vocab = Vocabulary(vocab)
        self.max_length, self.beam_size, self.bleu_ngram = max_length, beam_size, bleu_ngram
        self.memory = nn.Linear(input_dim, dim)
        self.embed = nn.Embedding(len(self.vocab), dim, padding_idx=PAD)
        self.position = nn.Parameter(torch.randn(max_length + 2, dim) * 0.02)
        self.layers = nn.ModuleList([DecoderLayer(dim, heads, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, len(self.vocab))

    def decode_logits(self, ids: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.position[: ids.shape[1]]
        for layer in self.layers:
            x = layer(x, memory, memory_mask)
        return self.out(self.norm(x))

    def forward(self, fused: Features, targets: torch.Tensor | None = None, features: Mapping[str, Features] | None = None) -> HeadOutput:
        memory, memory_mask = self.memory(fused.tokens), fused.mask & fused.present[:, None]
        if targets is not None:
            logits = self.decode_logits(targets[:, :-1], memory, memory_mask)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[:, 1:].reshape(-1), ignore_index=PAD)
            if self.training:
                return HeadOutput(logits=logits, predictions=logits.argmax(-1), loss=loss)
        else:
            loss = None
        generated = self.generate(memory, memory_mask, beam_size=self.beam_size)
        # Without targets there are no teacher-forced logits: logits is then an empty tensor.
        return HeadOutput(logits=memory.new_zeros(0) if targets is None else logits, predictions=generated, loss=loss)

    @torch.no_grad()
    def generate(self, memory: torch.Tensor, memory_mask: torch.Tensor, beam_size: int = 1) -> torch.Tensor:
        """Token ids ``[B, max_length]`` (PAD after EOS): greedy for ``beam_size == 1``, else beam search."""
        if beam_size == 1:
            ids = torch.full((memory.shape[0], 1), BOS, dtype=torch.long, device=memory.device)
            done = torch.zeros(memory.shape[0], dtype=torch.bool, device=memory.device)
            for _ in range(self.max_length):
                nxt = self.decode_logits(ids, memory, memory_mask)[:, -1].argmax(-1)
                nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
                ids = torch.cat([ids, nxt[:, None]], 1)
                done |= nxt == EOS
                if done.all():
                    break
            return F.pad(ids[:, 1:], (0, self.max_length - ids.shape[1] + 1), value=PAD)
        return torch.stack([self._beam(memory[i : i + 1], memory_mask[i : i + 1], beam_size) for i in range(memory.shape[0])])

    def _beam(self, memory: torch.Tensor, memory_mask: torch.Tensor, beam_size: int) -> torch.Tensor:
        beams = [([BOS], 0.0)]
        finished: list[tuple[list[int], float]] = []
        for _ in range(self.max_length):
            ids = torch.tensor([b for b, _ in beams], device=memory.device)
            logp = self.decode_logits(ids, memory.expand(len(beams), -1, -1), memory_mask.expand(len(beams), -1))[:, -1].log_softmax(-1)
            candidates = []
            for (seq, score), row in zip(beams, logp, strict=True):
                top_logp, top_ids = row.topk(beam_size)
                candidates += [(seq + [int(t)], score + float(lp)) for lp, t in zip(top_logp, top_ids, strict=True)]
            candidates.sort(key=lambda c: c[1], reverse=True)
            beams = []
            for seq, score in candidates:
                (finished if seq[-1] == EOS else beams).append((seq, score))
                if len(beams) == beam_size:
                    break
            if not beams or (finished and max(s for _, s in finished) >= beams[0][1]):
                break
        best = max(finished + beams, key=lambda c: c[1])[0][1:]
        best = best[: self.max_length]
        return torch.tensor(best + [PAD] * (self.max_length - len(best)), device=memory.device)

    def metrics(self) -> dict[str, Any]:
        return {"bleu": CaptionBLEU(self.vocab, self.bleu_ngram)}

    def collate_targets(self, targets: Sequence[Any]) -> torch.Tensor:
        rows = []
        for i, caption in enumerate(targets):
            if not isinstance(caption, str):
                raise TypeError(f"caption target #{i} must be a string, got {type(caption).__name__}")
            ids = self.vocab.encode(caption)
            if len(ids) > self.max_length + 2:
                raise ValueError(f"caption target #{i} has {len(ids) - 2} words; max_length is {self.max_length}")
            rows.append(ids)
        length = max(len(r) for r in rows)
        return torch.tensor([r + [PAD] * (length - len(r)) for r in rows], dtype=torch.long)

    def format_predictions(self, output: HeadOutput) -> list[str]:
        return [self.vocab.decode(row) for row in output.predictions.tolist()]

    def example_targets(self, batch_size: int, generator: torch.Generator) -> list[str]:
        words = self.vocab.words[len(SPECIALS):]
        out = []
        for _ in range(batch_size):
            n = int(torch.randint(1, 4, (1,), generator=generator))
            out.append(" ".join(words[int(j)] for j in torch.randint(0, len(words), (n,), generator=generator)))
        return out


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_head(
        "captioning", CaptioningHead,
        example_options={"vocab": ["a", "red", "cat", "dog"], "dim": 16, "heads": 2, "layers": 1, "max_length": 5},
    )
