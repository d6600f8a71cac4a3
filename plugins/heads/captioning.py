"""`captioning`: a transformer decoder over the fused tokens; teacher forcing, greedy and beam search, BLEU."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import mmcore
from mmcore import Features, HeadOutput
from mmcore_plugins.layers.attention import MultiHeadAttention

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


class DecoderLayer(nn.Module):
    """Causal self-attention (SDPA) + cross-attention to the fused tokens (mmcore_kernels) + feed-forward."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.self_out = nn.Linear(dim, dim)
        self.cross = MultiHeadAttention(dim, heads, dropout)
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

    A pre-norm transformer decoder (``layers`` x: causal self-attention, cross-attention to the
    projected fused tokens through ``mmcore_kernels.cross_attention``, feed-forward). ``vocab``
    lists the words of a lower-cased, whitespace-tokenised vocabulary; ``<pad> <bos> <eos> <unk>``
    are added in front. Targets are caption strings (``collate_targets`` -> padded ``[B, T]`` ids
    ``<bos> words <eos> <pad>...``). Training: teacher-forced cross-entropy, predictions are the
    teacher-forced argmax. Otherwise captions are generated, ``[B, max_length]`` ids (``beam_size``
    1 = greedy; more = batched beam search, ``length_penalty`` normalises the final choice);
    ``format_predictions`` gives the strings (with beam search, also the other beams and their
    scores). Metrics: BLEU (torchmetrics), exact match, per-word accuracy. Missing modalities: the
    fused padding and absent samples' tokens are masked keys; a sample without any fused token
    gets zero cross-attention (a caption from the language model alone).
    """

    export_refusal = ("it generates captions word by word until every caption has ended (a loop whose length depends "
                      "on the data, and beam search reorders its hypotheses), which torch.export cannot capture as one "
                      "graph; serve the run itself (mmcore serve RUN)")

    def __init__(
        self, input_dim: int, vocab: list[str], dim: int = 128, heads: int = 4, layers: int = 2,
        max_length: int = 20, beam_size: int = 1, length_penalty: float = 0.0, bleu_ngram: int = 4, dropout: float = 0.1,
    ) -> None:
        super().__init__(input_dim)
        if isinstance(vocab, str) or not isinstance(vocab, (list, tuple)) or not vocab:
            raise ValueError(f"vocab must be a non-empty list of words, got {vocab!r}")
        bad = [w for w in vocab if not isinstance(w, str) or not w or len(w.split()) != 1]
        if bad:
            raise ValueError(f"vocab entries must be single words (non-empty, no whitespace), got {bad[:5]}")
        for name, value in (("dim", dim), ("heads", heads), ("layers", layers), ("max_length", max_length),
                            ("beam_size", beam_size), ("bleu_ngram", bleu_ngram)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"captioning: {name} must be a positive int, got {value!r}")
        if dim % heads:
            raise ValueError(f"captioning: dim ({dim}) must be divisible by heads ({heads})")
        if length_penalty < 0:
            raise ValueError(f"captioning: length_penalty must be >= 0, got {length_penalty}")
        if length_penalty and beam_size == 1:
            raise ValueError("captioning: length_penalty applies to beam search only (beam_size > 1); with "
                             "beam_size: 1 (greedy) it would be ignored")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"captioning: dropout must be in [0, 1), got {dropout}")
        self.vocab = Vocabulary(vocab)
        self.max_length, self.beam_size, self.bleu_ngram = max_length, beam_size, bleu_ngram
        self.length_penalty = length_penalty
        self.memory = nn.Linear(input_dim, dim)
        self.embed = nn.Embedding(len(self.vocab), dim, padding_idx=PAD)
        self.position = nn.Parameter(torch.randn(max_length + 2, dim) * 0.02)
        self.layers = nn.ModuleList([DecoderLayer(dim, heads, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, len(self.vocab))

    @staticmethod
    def dataset_options(options: Mapping[str, Any]) -> dict[str, Any]:
        """What a data set should know of this head: targets are caption strings."""
        return {"target_type": "text"}

    def decode_logits(self, ids: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.position[: ids.shape[1]]
        for layer in self.layers:
            x = layer(x, memory, memory_mask)
        return self.out(self.norm(x))

    def forward(self, fused: Features, targets: torch.Tensor | None = None, features: Mapping[str, Features] | None = None) -> HeadOutput:
        memory_mask = fused.mask & fused.present[:, None]
        # Padding zeroed before the projection: attention weighs it 0, but 0 * NaN would still be NaN.
        memory = self.memory(torch.where(memory_mask[..., None], fused.tokens, 0.0))
        if targets is not None:
            logits = self.decode_logits(targets[:, :-1], memory, memory_mask)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[:, 1:].reshape(-1), ignore_index=PAD)
            if self.training:
                return HeadOutput(logits=logits, predictions=logits.argmax(-1), loss=loss)
        else:
            loss = None
        extras: dict[str, Any] = {}
        if self.beam_size > 1:  # keep the final beams: format_predictions lists them as alternatives
            generated, extras["beams"], extras["beam_scores"] = self.beam_search(memory, memory_mask, self.beam_size,
                                                                                 return_beams=True)
        else:
            generated = self.generate(memory, memory_mask, beam_size=1)
        # Without targets there are no teacher-forced logits: logits is then an empty tensor.
        return HeadOutput(logits=memory.new_zeros(0) if targets is None else logits, predictions=generated, loss=loss,
                          extras=extras)

    @torch.no_grad()
    def generate(self, memory: torch.Tensor, memory_mask: torch.Tensor, beam_size: int = 1) -> torch.Tensor:
        """Token ids ``[B, max_length]`` (EOS, then PAD): greedy for ``beam_size == 1``, else beam search."""
        if beam_size == 1:
            return self.greedy(memory, memory_mask)
        return self.beam_search(memory, memory_mask, beam_size)

    def greedy(self, memory: torch.Tensor, memory_mask: torch.Tensor) -> torch.Tensor:
        """The most likely next word at every step, until EOS or ``max_length`` words."""
        b = memory.shape[0]
        ids = torch.full((b, 1), BOS, dtype=torch.long, device=memory.device)
        done = torch.zeros(b, dtype=torch.bool, device=memory.device)
        for _ in range(self.max_length):
            nxt = self.decode_logits(ids, memory, memory_mask)[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
            ids = torch.cat([ids, nxt[:, None]], 1)
            done |= nxt == EOS
            if bool(done.all()):
                break
        return F.pad(ids[:, 1:], (0, self.max_length + 1 - ids.shape[1]), value=PAD)

    def beam_search(self, memory: torch.Tensor, memory_mask: torch.Tensor, beam_size: int,
                    return_beams: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched beam search over summed log-probabilities; the best of the final beams per sample.

        Every sample keeps ``beam_size`` hypotheses (``[B * beam, T]`` rows, one decoder call per
        step for the whole batch). A hypothesis that emitted EOS stays in its beam with a frozen
        score (it can only continue with PAD at no cost), so it competes with the live ones until
        the end. The final choice divides scores by ``length ** length_penalty`` (0 = raw sums).
        With ``beam_size == 1`` this is exactly greedy decoding. ``return_beams``: also the final
        beams ``[B, beam_size, max_length]`` ids and their scores ``[B, beam_size]`` (summed natural
        log-probabilities divided by ``length ** length_penalty``), best first.
        """
        b, vocab = memory.shape[0], len(self.vocab)
        device = memory.device
        memory = memory.repeat_interleave(beam_size, 0)
        memory_mask = memory_mask.repeat_interleave(beam_size, 0)
        ids = torch.full((b * beam_size, 1), BOS, dtype=torch.long, device=device)
        scores = torch.full((b, beam_size), float("-inf"), device=device)
        scores[:, 0] = 0.0  # all beams start identical: only one of them may expand at step 1
        done = torch.zeros(b * beam_size, dtype=torch.bool, device=device)
        lengths = torch.zeros(b * beam_size, device=device)
        pad_only = torch.full((vocab,), float("-inf"), device=device)
        pad_only[PAD] = 0.0
        rows = torch.arange(b, device=device)[:, None]
        for _ in range(self.max_length):
            logp = self.decode_logits(ids, memory, memory_mask)[:, -1].float().log_softmax(-1)
            logp = torch.where(done[:, None], pad_only, logp)
            candidates = (scores.reshape(-1, 1) + logp).view(b, beam_size * vocab)
            scores, flat = candidates.topk(beam_size, dim=1)
            source = (rows * beam_size + torch.div(flat, vocab, rounding_mode="floor")).reshape(-1)
            token = (flat % vocab).reshape(-1)
            ids = torch.cat([ids[source], token[:, None]], 1)
            lengths = lengths[source] + (~done[source]).to(lengths.dtype)
            done = done[source] | (token == EOS)
            if bool(done.all()):
                break
        final = scores / lengths.view(b, beam_size).clamp_min(1) ** self.length_penalty
        best = rows.squeeze(1) * beam_size + final.argmax(1)
        generated = F.pad(ids[best, 1:], (0, self.max_length + 1 - ids.shape[1]), value=PAD)
        if not return_beams:
            return generated
        order = final.argsort(dim=1, descending=True)
        beams = F.pad(ids[:, 1:], (0, self.max_length + 1 - ids.shape[1]), value=PAD).view(b, beam_size, -1)
        return generated, beams.gather(1, order[..., None].expand_as(beams)), final.gather(1, order)

    def metrics(self) -> dict[str, Any]:
        from mmcore_plugins.heads._caption_metrics import CaptionExactMatch, CaptionTokenAccuracy
        from mmcore_plugins.heads.metrics import CaptionBLEU

        return {"bleu": CaptionBLEU(self.vocab.decode, n_gram=self.bleu_ngram),
                "exact_match": CaptionExactMatch(self.vocab.decode), "token_accuracy": CaptionTokenAccuracy(self.vocab.decode)}

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

    def format_predictions(self, output: HeadOutput) -> list[str] | list[dict[str, Any]]:
        """Caption strings; after beam search (``extras["beams"]``), per sample ``{"caption", "score",
        "alternatives": [{"caption", "score"}, ...]}`` (the other final beams, best first; scores as in
        :meth:`beam_search`), which ``mmcore predict`` prints."""
        captions = [self.vocab.decode(row) for row in output.predictions.tolist()]
        beams = output.extras.get("beams") if isinstance(output.extras, dict) else None
        if not isinstance(beams, torch.Tensor):
            return captions
        scores = output.extras["beam_scores"].tolist()
        out = []
        for caption, rows, row_scores in zip(captions, beams.tolist(), scores, strict=True):
            beam = [{"caption": self.vocab.decode(r), "score": round(float(sc), 4)} for r, sc in zip(rows, row_scores, strict=True)]
            out.append({"caption": caption, "score": beam[0]["score"],
                        "alternatives": [a for a in beam[1:] if a["caption"] != caption]})
        return out

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
