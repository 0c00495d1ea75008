"""The frozen vocabulary layout of a discrete speech LM: speech tokens appended after the LLM's own vocabulary.

Owns :class:`VocabLayout` (the id ranges, saved as ``vocab_layout.json`` in every checkpoint), :func:`extend_llm`
(add the tokens to the tokenizer and resize the LLM's embeddings), :func:`check_layout` (fail loudly when a saved
layout and the one being built differ) and :func:`trainable_rows_config` (LoRA plus trainable new rows, peft).
May import: utils, config, tasks (the token spellings live in :mod:`speechlm.tasks.render`), backbones.

Layout, in id order (V text vocabulary, K units, M markers, Q codec levels, C codebook size)::

    [0, V)                text: the LLM's own tokens, untouched (their rows and logits stay bit-identical)
    [V, V+K)              units  <|u0|> .. <|u{K-1}|>             (stream 0)
    [V+K, V+K+M)          markers <|sosp|> <|eosp|> <|ta|> <|ua|> <|sot|> <|eot|> <|sos_eos|> <|pad|>, then
                          one task marker per task <|task:asr|> ...  (stream 0)
    [S, S+Q*C)            codec codes, S = V+K+M; level q's code c is S + q*C + c (streams 1..Q; ESPnet's
                          codec tokenizer offsets each RVQ level by codebook_index x codebook_size,
                          espnet2/speechlm/tokenizer/codec_tokenizer.py)

Only [0, S) are rows of the LLM's embedding (``lm_vocab``); codec codes live in the small tables of
:class:`speechlm.model.discrete.DiscreteSpeechLM`. Never reorder: ESPnet's own experiment log records a run
destroyed by vocabulary drift, so the layout is compared field by field on load (:func:`check_layout`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from speechlm.tasks.render import MARKERS, PAD, task_marker, unit_token

LAYOUT_FILE = "vocab_layout.json"
LAYOUT_VERSION = 1


class LayoutMismatch(ValueError):
    """A saved vocabulary layout differs from the one the code would build: loading would corrupt the model."""


def text_tokenizer_hash(tokenizer) -> str:
    """sha256 (16 hex) of the LLM tokenizer's token -> id table: a changed BPE shows up as a layout mismatch."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class VocabLayout:
    text_vocab: int
    """V: the LLM tokenizer's size before extension; the first new id."""
    n_units: int
    """K: speech units 0..K-1 (deduplicated SSL clusters, SpeechGPT's <0>..<999>)."""
    tasks: tuple[str, ...] = ()
    """Task names with a marker <|task:NAME|> (ESPnet's use_task_identifier)."""
    codec_levels: int = 0
    """Q: acoustic streams 1..Q (ESPnet codec_ssl: stream 0 the SSL unit, streams >= 1 codec levels)."""
    codebook_size: int = 0
    """C: codes per codec level."""
    tokenizer_hash: str = ""
    """Hash of the speech tokenizer that produced the units (given by whoever fits it)."""
    text_hash: str = ""
    """:func:`text_tokenizer_hash` of the LLM tokenizer."""
    markers: tuple[str, ...] = MARKERS
    """Fixed markers, in id order (``speechlm.tasks.render.MARKERS``)."""
    version: int = LAYOUT_VERSION

    # ---- construction / persistence ---------------------------------------------------------------
    @classmethod
    def for_llm(cls, tokenizer, n_units: int, tasks: tuple[str, ...] = (), codec_levels: int = 0,
                codebook_size: int = 0, tokenizer_hash: str = "") -> VocabLayout:
        """The layout for an (unextended) LLM tokenizer."""
        if n_units < 0 or codec_levels < 0 or (codec_levels > 0 and codebook_size <= 0):
            raise ValueError(f"bad layout sizes: n_units={n_units}, codec_levels={codec_levels}, codebook_size={codebook_size}")
        return cls(text_vocab=len(tokenizer), n_units=n_units, tasks=tuple(tasks), codec_levels=codec_levels,
                   codebook_size=codebook_size, tokenizer_hash=tokenizer_hash, text_hash=text_tokenizer_hash(tokenizer))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> VocabLayout:
        raw = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise LayoutMismatch(f"vocabulary layout has unknown fields {sorted(unknown)} (written by a newer speechlm?)")
        for key in ("tasks", "markers"):
            if key in raw:
                raw[key] = tuple(raw[key])
        return cls(**raw)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / LAYOUT_FILE
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, folder: str | Path) -> VocabLayout:
        path = Path(folder) / LAYOUT_FILE
        if not path.exists():
            raise FileNotFoundError(f"{folder}: no {LAYOUT_FILE}; a discrete speech LM checkpoint always holds one")
        return cls.from_json(path.read_text())

    # ---- ranges ----------------------------------------------------------------------------------
    @property
    def unit_start(self) -> int:
        return self.text_vocab

    @property
    def marker_start(self) -> int:
        return self.text_vocab + self.n_units

    @property
    def lm_vocab(self) -> int:
        """Rows of the LLM's embedding after extension: text + units + markers (stream 0's vocabulary)."""
        return self.marker_start + len(self.markers) + len(self.tasks)

    @property
    def codec_start(self) -> int:
        return self.lm_vocab

    @property
    def size(self) -> int:
        """Every id the layout names, codec slice included."""
        return self.codec_start + self.codec_levels * self.codebook_size

    @property
    def nq(self) -> int:
        """Streams of the multi-stream LM: stream 0 plus one per codec level."""
        return 1 + self.codec_levels

    def ranges(self) -> dict[str, tuple[int, int]]:
        """Half-open id ranges by modality: text, unit, special (markers, task markers), codec."""
        return {"text": (0, self.text_vocab), "unit": (self.unit_start, self.marker_start),
                "special": (self.marker_start, self.lm_vocab), "codec": (self.codec_start, self.size)}

    def new_tokens(self) -> list[str]:
        """Spellings of the rows added to the LLM, in id order (units, markers, task markers)."""
        return [unit_token(i) for i in range(self.n_units)] + list(self.markers) + [task_marker(t) for t in self.tasks]

    # ---- ids -------------------------------------------------------------------------------------
    def unit_id(self, unit: int) -> int:
        if not 0 <= unit < self.n_units:
            raise ValueError(f"unit {unit} outside 0..{self.n_units - 1}")
        return self.unit_start + unit

    def unit_of(self, token_id: int) -> int | None:
        """The unit an id stands for, or None."""
        return token_id - self.unit_start if self.unit_start <= token_id < self.marker_start else None

    def marker_id(self, name: str) -> int:
        if name in self.markers:
            return self.marker_start + self.markers.index(name)
        for i, t in enumerate(self.tasks):
            if task_marker(t) == name:
                return self.marker_start + len(self.markers) + i
        raise KeyError(f"{name!r} is not a marker of this layout: {list(self.markers)} + task markers of {list(self.tasks)}")

    def task_id(self, task: str) -> int:
        return self.marker_id(task_marker(task))

    @property
    def pad_id(self) -> int:
        """The pad token of streams >= 1 outside speech (ESPnet pads with 0 there)."""
        return self.marker_id(PAD)

    def codec_id(self, level: int, code: int) -> int:
        if not (0 <= level < self.codec_levels and 0 <= code < self.codebook_size):
            raise ValueError(f"codec level {level} code {code} outside {self.codec_levels} x {self.codebook_size}")
        return self.codec_start + level * self.codebook_size + code

    def modality_of(self, ids: torch.Tensor) -> torch.Tensor:
        """Modality index per id (0 text, 1 unit, 2 special, 3 codec; order of :data:`MODALITIES`), same shape."""
        out = torch.full_like(ids, 2)
        out[ids < self.text_vocab] = 0
        out[(ids >= self.unit_start) & (ids < self.marker_start)] = 1
        out[ids >= self.codec_start] = 3
        return out


MODALITIES = ("text", "unit", "special", "codec")
"""Modality names in the order :meth:`VocabLayout.modality_of` numbers them."""


def check_layout(saved: VocabLayout, expected: VocabLayout, where: str | Path = "") -> None:
    """Raise :class:`LayoutMismatch` naming each differing field, both layouts and the folder ``where``."""
    diffs = [f"{f.name}: saved {getattr(saved, f.name)!r} != expected {getattr(expected, f.name)!r}"
             for f in dataclasses.fields(VocabLayout) if getattr(saved, f.name) != getattr(expected, f.name)]
    if diffs:
        raise LayoutMismatch(
            f"vocabulary layout mismatch{f' in {where}' if where else ''} (loading would silently corrupt the model):\n  "
            + "\n  ".join(diffs) + f"\nsaved layout: {saved.to_json()}\nexpected layout: {expected.to_json()}")


def _row_tables(llm) -> list[torch.Tensor]:
    """The token tables whose rows a layout owns: the input embeddings, and an untied head's weight too."""
    tables = [llm.get_input_embeddings().weight]
    out = llm.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != tables[0].data_ptr():
        tables.append(out.weight)
    return tables


def extend_llm(llm, tokenizer, layout: VocabLayout, seed: int = 0, noise: float = 0.1) -> None:
    """Add the layout's tokens to ``tokenizer`` and grow ``llm``'s embeddings (in place) to ``layout.lm_vocab`` rows.

    Text rows are copied untouched, so text logits stay bit-identical. New rows start at the mean text
    embedding plus Gaussian noise of ``noise`` x the text rows' per-dimension std, from a generator seeded by
    ``seed`` (the design note's guess; ESPnet draws them from a normal instead, module/huggingface.py).
    """
    from tokenizers import AddedToken

    if len(tokenizer) != layout.text_vocab:
        raise LayoutMismatch(f"tokenizer has {len(tokenizer)} tokens, the layout expects {layout.text_vocab} before extension")
    if layout.text_hash and text_tokenizer_hash(tokenizer) != layout.text_hash:
        raise LayoutMismatch(f"LLM tokenizer hash {text_tokenizer_hash(tokenizer)} != layout's {layout.text_hash}")
    names = layout.new_tokens()
    clash = [n for n in names if n in tokenizer.get_vocab()]
    if clash:
        raise LayoutMismatch(f"tokenizer already holds {clash[:5]}: the layout's spellings must be new")
    tokenizer.add_tokens([AddedToken(n, normalized=False, special=False) for n in names])
    got = tokenizer.convert_tokens_to_ids(names)
    if got != list(range(layout.text_vocab, layout.lm_vocab)):
        raise LayoutMismatch("the tokenizer gave the new tokens other ids than the layout's")
    rows = llm.get_input_embeddings().weight.shape[0]
    if rows < layout.text_vocab:
        raise LayoutMismatch(f"LLM embedding has {rows} rows < text vocabulary {layout.text_vocab}")
    llm.resize_token_embeddings(max(rows, layout.lm_vocab), mean_resizing=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for w in _row_tables(llm):  # [V', H]
            text = w[: layout.text_vocab].float()  # [V, H]
            n_new = w.shape[0] - layout.text_vocab
            fresh = text.mean(0) + noise * text.std(0) * torch.randn(n_new, w.shape[1], generator=gen)  # [V'-V, H]
            w[layout.text_vocab:] = fresh.to(w.dtype)
    llm.config.vocab_size = llm.get_input_embeddings().weight.shape[0]


def init_unit_rows(llm, layout: VocabLayout, centroids: torch.Tensor, seed: int = 0) -> None:
    """Unit rows (in place) from the tokenizer's centroids [K, D], so units that sound alike start alike.

    Each centroid is standardised over the K centroids, sent through a fixed random orthonormal map to the LLM's
    width (distances kept up to scale; Johnson-Lindenstrauss) and scaled to the text rows' per-dimension std around
    their mean. The default start (mean + 0.1 std noise) makes every unit the same vector, which the LM has to tell
    apart from the loss alone. Untied heads get the same rows."""
    c = centroids.detach().float()  # [K, D]
    if c.shape[0] != layout.n_units:
        raise LayoutMismatch(f"{c.shape[0]} centroids for a layout of {layout.n_units} units")
    z = (c - c.mean(0)) / c.std(0).clamp(min=1e-6)  # [K, D]
    z = z / z.pow(2).mean(1, keepdim=True).sqrt().clamp(min=1e-6)  # [K, D]: unit RMS per row
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for w in _row_tables(llm):  # [V', H]
            h, d = w.shape[1], z.shape[1]
            if h >= d:  # widen: D orthonormal directions of the LLM space
                q, _ = torch.linalg.qr(torch.randn(h, d, generator=gen))  # [H, D]
                y = z @ q.T  # [K, H]
            else:  # narrow: project onto H orthonormal directions of the centroid space
                q, _ = torch.linalg.qr(torch.randn(d, h, generator=gen))  # [D, H]
                y = z @ q  # [K, H]
            y = y / y.pow(2).mean(1, keepdim=True).sqrt().clamp(min=1e-6)  # [K, H], unit RMS per row
            text = w[: layout.text_vocab].float()  # [V, H]
            rows = text.mean(0) + text.std(0) * y  # [K, H]
            w[layout.unit_start:layout.unit_start + layout.n_units] = rows.to(w.dtype)


def trainable_rows_config(layout: VocabLayout, r: int = 8, alpha: int = 16, dropout: float = 0.05,
                          targets: tuple[str, ...] = ("q_proj", "v_proj")):
    """A peft ``LoraConfig``: LoRA on ``targets`` (SpeechGPT's stage-3 r=8, alpha=16, dropout 0.05 on q,v;
    src/train/com_sft.py) plus the layout's new rows as peft trainable tokens (peft >= 0.15). With tied
    embeddings peft trains the rows once for both input and head; the text rows stay frozen."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none",
                      trainable_token_indices=list(range(layout.text_vocab, layout.lm_vocab)))
