"""An exported speechlm model as Hugging Face remote code: ``AutoModel.from_pretrained(folder, trust_remote_code=True)``.

Standalone: imports torch and transformers only, so a folder written by ``speechlm export`` runs where speechlm
is not installed. It computes what speechlm's own inference computes, step for step:

    16-kHz waves -> Whisper log-mel of each clip's real length [B, M, T]
      -> Whisper encoder on the real frames (positional table sliced to F, padding masked) [B, F, D]
      -> adapter (frame stacking + MLP, strided convs, or stacking + Transformer layers) [B, A, H]
      -> optional CTC head over the LLM's token embeddings: frames compressed (blank frames dropped, runs of one
         token averaged) or replaced by posterior-weighted token embeddings [B, A', H]
      -> spliced into the LLM's chat template at the audio placeholder, left-padded [B, L, H]
      -> greedy or beam decoding with the LLM's KV cache -> text.

Legend: B batch, N samples, M mel bins, T mel frames (100/s), F encoder frames (50/s), D encoder width,
A audio tokens, H LLM width, V vocabulary, C CTC classes, L spliced length, r LoRA rank.

Entry points: :meth:`SpeechLMModel.transcribe` (waves in, texts out, for any task in ``config.tasks`` or a free
instruction), :meth:`SpeechLMModel.generate` (one batch, token ids out), :meth:`SpeechLMModel.classify` (closed-set
labels by scoring each), and :meth:`SpeechLMModel.forward` (input ids holding one audio token per row, LLM logits
and loss). With ``config.lora_adapter`` the LoRA folder is applied on load (:meth:`SpeechLMModel.load_lora_adapter`).
"""

from __future__ import annotations

import inspect
import json
import math
import re
from typing import Any, Sequence

import torch
from torch import nn
from transformers import (AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LogitsProcessor,
                          LogitsProcessorList, PreTrainedModel, WhisperConfig)
from transformers.audio_utils import mel_filter_bank
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from .configuration_speechlm import SpeechLMConfig
from .ctc_prefix import CTCPrefixScorer, token_classes

SAMPLE_RATE = 16000
N_FFT = 400  # 25-ms window (Whisper)
HOP = 160  # 10-ms hop
CHUNK_SAMPLES = 30 * SAMPLE_RATE
IGNORE = -100


# ---- adapters: encoder frames [B, F, D] -> LLM input embeddings [B, A, H] ------------------------------------
class StackingProjector(nn.Module):
    """k consecutive frames concatenated, LayerNorm, Linear-GELU-Linear (optionally an RMSNorm on the output)."""

    def __init__(self, in_dim: int, out_dim: int, k: int, hidden: int, out_norm: bool = False):
        super().__init__()
        self.k = k
        self.norm = nn.LayerNorm(in_dim * k)
        self.proj = nn.Sequential(nn.Linear(in_dim * k, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        self.out_norm = nn.RMSNorm(out_dim) if out_norm else None

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return (lengths + self.k - 1) // self.k

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        b, f, d = x.shape  # [B, F, D], zeros past each clip's end
        pad = (-f) % self.k
        x = nn.functional.pad(x, (0, 0, 0, pad)).reshape(b, (f + pad) // self.k, d * self.k)  # [B, A, D*k]
        y = self.proj(self.norm(x))  # [B, A, H]
        return self.out_norm(y) if self.out_norm is not None else y


class ConvDownsampler(nn.Module):
    """log2(k) stride-2 conv1d layers with GELU, LayerNorm, Linear; outputs past a clip's end zeroed after each conv."""

    def __init__(self, in_dim: int, out_dim: int, k: int, hidden: int, out_norm: bool = False):
        super().__init__()
        if k < 1 or k & (k - 1):
            raise ValueError(f"config.adapter.k: the conv adapter needs a power of two, got {k}")
        self.k = k
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(int(math.log2(k))):
            layers += [nn.Conv1d(dim, hidden, kernel_size=3, stride=2, padding=1), nn.GELU()]
            dim = hidden
        self.convs = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, out_dim)
        self.out_norm = nn.RMSNorm(out_dim) if out_norm else None

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for _ in range(int(math.log2(self.k))):
            lengths = (lengths + 1) // 2  # kernel 3, stride 2, padding 1
        return lengths

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        h = x.transpose(1, 2)  # [B, D, F]
        for layer in self.convs:
            h = layer(h)
            if lengths is not None and isinstance(layer, nn.Conv1d):
                lengths = (lengths + 1) // 2
                keep = torch.arange(h.shape[-1], device=h.device)[None, :] < lengths.to(h.device)[:, None]  # [B, A']
                h = h * keep[:, None, :]
        y = self.proj(self.norm(h.transpose(1, 2)))  # [B, A, H]
        return self.out_norm(y) if self.out_norm is not None else y


class StackTransformer(nn.Module):
    """Frame stacking, Linear to the width, pre-norm Transformer layers (padding masked), LayerNorm-MLP to H."""

    def __init__(self, in_dim: int, out_dim: int, k: int, hidden: int, out_norm: bool = False, layers: int = 2,
                 width: int = 512, heads: int = 8, ffn: int = 2048):
        super().__init__()
        self.k = k
        self.norm = nn.LayerNorm(in_dim * k)
        self.inp = nn.Linear(in_dim * k, width)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=ffn, dropout=0.1, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        self.out_norm = nn.RMSNorm(out_dim) if out_norm else None

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return (lengths + self.k - 1) // self.k

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        b, f, d = x.shape  # [B, F, D]
        pad = (-f) % self.k
        x = nn.functional.pad(x, (0, 0, 0, pad)).reshape(b, (f + pad) // self.k, d * self.k)  # [B, A, D*k]
        h = self.inp(self.norm(x))  # [B, A, W]
        mask = None
        if lengths is not None:
            a = self.out_lengths(lengths.to(h.device))  # [B]
            mask = torch.arange(h.shape[1], device=h.device)[None, :] >= a[:, None]  # [B, A], True = padding
        h = self.layers(h, src_key_padding_mask=mask)  # [B, A, W]
        y = self.proj(h)  # [B, A, H]
        return self.out_norm(y) if self.out_norm is not None else y


def build_adapter(spec: dict) -> nn.Module:
    """The adapter ``config.adapter`` describes."""
    kind = spec.get("type")
    common = dict(in_dim=int(spec["in_dim"]), out_dim=int(spec["out_dim"]), k=int(spec["k"]), hidden=int(spec["hidden"]),
                  out_norm=bool(spec.get("out_norm", False)))
    if kind == "stack":
        return StackingProjector(**common)
    if kind == "conv":
        return ConvDownsampler(**common)
    if kind == "stack-tf":
        return StackTransformer(**common, layers=int(spec["layers"]), width=int(spec["width"]), heads=int(spec["heads"]),
                                ffn=int(spec["ffn"]))
    raise ValueError(f"config.adapter.type: unknown adapter {kind!r} (this file knows stack, conv, stack-tf)")


# ---- CTC head over the LLM's token embeddings -------------------------------------------------------------------
class CTCHead(nn.Module):
    """Scaled cosine of adapter frames against the LLM's token embeddings (or the rows ``vocab`` names) plus a
    learned blank (the last class)."""

    def __init__(self, hidden: int, vocab: Sequence[int] = ()):
        super().__init__()
        self.blank = nn.Parameter(torch.zeros(hidden))  # [H]
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.vocab_ids = [int(t) for t in vocab]  # LLM token ids of classes 0..C-1 (empty: every token)
        self._vocab: dict[torch.device, torch.Tensor] = {}

    def vocab(self, device: torch.device) -> torch.Tensor | None:
        if not self.vocab_ids:
            return None
        if device not in self._vocab:
            self._vocab[device] = torch.tensor(self.vocab_ids, dtype=torch.long, device=device)
        return self._vocab[device]

    def token_table(self, embedding: torch.Tensor) -> torch.Tensor:
        """The embeddings of the classes before the blank [C, H]."""
        e = embedding.detach()  # [V, H]
        vocab = self.vocab(e.device)
        return e[vocab] if vocab is not None else e

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """x [B, A, H], embedding [V, H] -> logits [B, A, C+1] (blank last)."""
        # computed as speechlm.model.ctc.EmbeddingCTCHead does, operation for operation, so the two agree bit for bit
        e = nn.functional.normalize(self.token_table(embedding).to(x.dtype), dim=-1)  # [C, H]
        x = nn.functional.normalize(x, dim=-1) * self.log_scale.exp().to(x.dtype)  # [B, A, H]
        blank = nn.functional.normalize(self.blank.to(x.dtype), dim=-1)  # [H]
        return torch.cat([x @ e.T, (x @ blank)[..., None]], dim=-1)  # [B, A, C+1]


class EndTurnAtCap(LogitsProcessor):
    """Each row whose generated tokens reached its cap ([R]) can only end the turn next (generating from
    embeddings, ``input_ids`` holds the generated tokens alone)."""

    def __init__(self, caps: torch.Tensor, eos_id: int):
        self.caps, self.eos_id = caps, eos_id  # [R]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        over = input_ids.shape[1] >= self.caps  # [R]
        only_eos = torch.full_like(scores, float("-inf"))  # [R, V]
        only_eos[:, self.eos_id] = 0.0
        return torch.where(over[:, None], only_eos, scores)


def ctc_compress(frames: torch.Tensor, logits: torch.Tensor, lengths: torch.Tensor, blank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop frames whose argmax is blank and average each run of frames with one argmax token.
    frames [B, A, H], logits [B, A, C+1], lengths [B] -> [B, A', H], lengths [B]. An all-blank clip keeps its
    least blank frame."""
    best = logits.argmax(dim=-1)  # [B, A]
    pieces, new_lengths = [], []
    for i, n in enumerate(lengths.tolist()):
        tok = best[i, :n]  # [n]
        keep = tok != blank
        if not bool(keep.any()):
            j = int(logits[i, :n, blank].argmin())
            pieces.append(frames[i, j:j + 1])  # [1, H]
            new_lengths.append(1)
            continue
        pos = keep.nonzero()[:, 0]  # [k]
        new_run = torch.ones_like(pos, dtype=torch.bool)
        new_run[1:] = (tok[pos[1:]] != tok[pos[:-1]]) | (pos[1:] != pos[:-1] + 1)
        run_id = new_run.cumsum(0) - 1  # [k]
        r = int(run_id[-1]) + 1
        summed = frames.new_zeros(r, frames.shape[-1]).index_add(0, run_id, frames[i, pos])  # [r, H]
        count = torch.bincount(run_id, minlength=r).to(frames.dtype)[:, None]  # [r, 1]
        pieces.append(summed / count)
        new_lengths.append(r)
    out = frames.new_zeros(len(pieces), max(new_lengths), frames.shape[-1])  # [B, A', H]
    for i, p in enumerate(pieces):
        out[i, : p.shape[0]] = p
    return out, torch.tensor(new_lengths)


# ---- LoRA kept apart from the base weights (a peft LoRA folder, applied without peft) ----------------------------
class LoraLinear(nn.Module):
    """``base(x) + B(A(x)) * scaling``, the sum peft's LoRA Linear computes (inputs cast to the LoRA dtype)."""

    def __init__(self, base: nn.Linear, r: int, scaling: float, dtype: torch.dtype):
        super().__init__()
        self.base_layer = base
        self.lora_A = nn.Linear(base.in_features, r, bias=False, device=base.weight.device, dtype=dtype)  # [r, in]
        self.lora_B = nn.Linear(r, base.out_features, bias=False, device=base.weight.device, dtype=dtype)  # [out, r]
        self.scaling = scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        dtype = result.dtype
        x = x.to(self.lora_A.weight.dtype)
        result = result + self.lora_B(self.lora_A(x)) * self.scaling
        return result.to(dtype)

    def merged(self) -> nn.Linear:
        """The base layer with ``B @ A * scaling`` added to its weight (what peft's merge does)."""
        with torch.no_grad():
            delta = (self.lora_B.weight @ self.lora_A.weight) * self.scaling  # [out, in]
            self.base_layer.weight += delta.to(self.base_layer.weight.dtype)
        return self.base_layer


def _lora_targets(names: Sequence[str], targets: Any) -> list[str]:
    """Module names peft's ``target_modules`` selects: a regex (full match) or a list of names / name suffixes."""
    if isinstance(targets, str):
        return [n for n in names if re.fullmatch(targets, n)]
    wanted = set(targets or ())
    return [n for n in names if n in wanted or any(n.endswith("." + t) for t in wanted)]


# ---- the model ---------------------------------------------------------------------------------------------------
class SpeechLMModel(PreTrainedModel):
    """Whisper encoder + adapter (+ CTC head) + causal LM; see the module docstring."""

    config_class = SpeechLMConfig
    base_model_prefix = "speechlm"
    main_input_name = "input_ids"
    _supports_sdpa = True
    _supports_flash_attn_2 = True
    _supports_flash_attn = True

    def __init__(self, config: SpeechLMConfig):
        super().__init__(config)
        enc_cfg = WhisperConfig(**{k: v for k, v in config.encoder_config.items() if k != "model_type"})
        enc_cfg._attn_implementation = config.encoder_attn_implementation
        self.audio_encoder = WhisperEncoder(enc_cfg)
        self.adapter = build_adapter(config.adapter)
        text = dict(config.llm_config)
        if "model_type" not in text:
            raise ValueError("config.llm_config: no model_type (which transformers causal LM to build)")
        text_cfg = AutoConfig.for_model(text.pop("model_type"), **text)
        self.language_model = AutoModelForCausalLM.from_config(text_cfg, attn_implementation=config.llm_attn_implementation)
        if config.llm_generation_config:
            self.language_model.generation_config = GenerationConfig.from_dict(dict(config.llm_generation_config))
        self.ctc = CTCHead(text_cfg.hidden_size, config.ctc_vocab) if config.ctc_head else None
        if (config.compress_audio or config.posterior_input) and self.ctc is None:
            raise ValueError("config.compress_audio / config.posterior_input need config.ctc_head")
        self._tokenizer = None
        self._mel: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        sig = inspect.signature(type(self.audio_encoder.layers[0]).forward).parameters
        self._layer_kw = {"layer_head_mask": None} if "layer_head_mask" in sig else {}  # transformers 4.x layers
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Every weight comes from the exported checkpoint; the backbones initialise their own modules."""

    # ---- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """``PreTrainedModel.from_pretrained``, then the LoRA folder when the export kept LoRA apart."""
        model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        if model.config.lora_adapter:
            hub = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only", "force_download") if k in kwargs}
            model.load_lora_adapter(pretrained_model_name_or_path, **hub)
        return model

    def load_lora_adapter(self, path_or_repo: str, **hub_kwargs: Any) -> None:
        """Wrap the LLM's target layers with the peft LoRA folder ``config.lora_adapter["path"]`` (adapter_config.json
        and adapter_model.safetensors), without peft: the base weights stay as they are."""
        from safetensors.torch import load_file
        from transformers.utils import cached_file

        sub = self.config.lora_adapter["path"]
        cfg_path = cached_file(path_or_repo, f"{sub}/adapter_config.json", **hub_kwargs)
        weights_path = cached_file(path_or_repo, f"{sub}/adapter_model.safetensors", **hub_kwargs)
        with open(cfg_path, encoding="utf-8") as f:
            lora = json.load(f)
        for field, ok in (("use_dora", False), ("fan_in_fan_out", False), ("bias", "none")):
            if lora.get(field, ok) != ok:
                raise ValueError(f"{cfg_path}: {field}={lora.get(field)!r} is not supported (plain LoRA only)")
        extras = ("modules_to_save", "layers_to_transform", "rank_pattern", "alpha_pattern", "exclude_modules",
                  "layer_replication", "target_parameters", "trainable_token_indices", "lora_bias", "use_qalora")
        used_extras = [k for k in extras if lora.get(k)]
        if used_extras:
            raise ValueError(f"{cfg_path}: {', '.join(used_extras)} not supported (plain LoRA on Linear layers only)")
        r, alpha = int(lora["r"]), float(lora["lora_alpha"])
        scaling = alpha / math.sqrt(r) if lora.get("use_rslora") else alpha / r
        state = load_file(weights_path)
        prefix = "base_model.model."
        state = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
        lm = self.language_model
        names = [n for n, m in lm.named_modules() if isinstance(m, nn.Linear)]
        targets = _lora_targets(names, lora.get("target_modules"))
        if not targets:
            raise ValueError(f"{cfg_path}: target_modules {lora.get('target_modules')!r} match no Linear layer of the LLM")
        used = set()
        for name in targets:
            parent_name, _, child = name.rpartition(".")
            parent = lm.get_submodule(parent_name) if parent_name else lm
            keys = (f"{name}.lora_A.weight", f"{name}.lora_B.weight")
            if not all(k in state for k in keys):
                raise KeyError(f"{weights_path}: no LoRA weights for {name} ({keys[0]})")
            wrapped = LoraLinear(getattr(parent, child), r, scaling, state[keys[0]].dtype)
            with torch.no_grad():
                wrapped.lora_A.weight.copy_(state[keys[0]])
                wrapped.lora_B.weight.copy_(state[keys[1]])
            setattr(parent, child, wrapped.train(self.training))
            used.update(keys)
        unknown = sorted(set(state) - used)
        if unknown:
            raise KeyError(f"{weights_path}: weights for no target layer: {unknown[:5]}")

    def merge_lora(self) -> None:
        """Fold every LoRA branch into its base weight (faster; numbers change in the last bits)."""
        for name, module in list(self.language_model.named_modules()):
            if isinstance(module, LoraLinear):
                parent_name, _, child = name.rpartition(".")
                parent = self.language_model.get_submodule(parent_name) if parent_name else self.language_model
                setattr(parent, child, module.merged())

    @property
    def tokenizer(self):
        """The LLM tokenizer saved in the model folder (loaded on first use)."""
        if self._tokenizer is None:
            if not self.config.name_or_path:
                raise ValueError("no tokenizer: load the model with from_pretrained(folder) or set model.tokenizer")
            # the folder's config.json names this remote code, which AutoTokenizer reads to pick a class
            self._tokenizer = AutoTokenizer.from_pretrained(self.config.name_or_path, trust_remote_code=True)
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value) -> None:
        self._tokenizer = value

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    # ---- audio -----------------------------------------------------------------------------------------------
    def _mel_tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (device.type, device.index)
        if key not in self._mel:
            fb = mel_filter_bank(num_frequency_bins=1 + N_FFT // 2, num_mel_filters=self.audio_encoder.config.num_mel_bins,
                                 min_frequency=0.0, max_frequency=8000.0, sampling_rate=SAMPLE_RATE, norm="slaney",
                                 mel_scale="slaney")  # [N_FFT//2+1, M]
            filters = torch.from_numpy(fb.T.copy()).float().to(device)  # [M, 201]
            self._mel[key] = (filters, torch.hann_window(N_FFT).to(device))
        return self._mel[key]

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """Whisper log-mel of one clip: wave [N] -> [M, N // HOP]."""
        filters, window = self._mel_tables(wave.device)
        stft = torch.stft(wave, N_FFT, HOP, window=window, return_complex=True)  # [201, N//HOP + 1]
        power = stft[..., :-1].abs() ** 2  # [201, T]
        log = torch.clamp(filters @ power, min=1e-10).log10()  # [M, T]
        log = torch.maximum(log, log.max() - 8.0)
        return (log + 4.0) / 4.0

    def features(self, waves: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips -> mel [B, M, T] (zero padded; 3000 frames with ``pad_audio_to_30s``) and mel lengths [B]."""
        max_frames = self.audio_encoder.config.max_source_positions
        if self.config.pad_audio_to_30s:
            mels = [self.log_mel(nn.functional.pad(w, (0, max(0, CHUNK_SAMPLES - w.numel())))[:CHUNK_SAMPLES]) for w in waves]
            lengths = torch.tensor([min(w.numel() // HOP, 2 * max_frames) for w in waves])
            return torch.stack(mels), lengths
        mels = [self.log_mel(w) for w in waves]  # each [M, T_i]
        lengths = torch.tensor([m.shape[1] for m in mels])
        t_max = int(lengths.max())
        t_max += t_max % 2  # even, so the stride-2 conv maps padding cleanly
        return torch.stack([nn.functional.pad(m, (0, t_max - m.shape[1])) for m in mels]), lengths  # [B, M, T]

    def _encoder_mask(self, valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Padding mask from ``valid`` [B, F] in the form the encoder's attention kernel reads."""
        impl = getattr(self.audio_encoder.config, "_attn_implementation", None) or "eager"
        if impl.startswith("flash_attention"):
            return valid.long()  # [B, F]
        if impl == "sdpa":
            return valid[:, None, None, :]  # [B, 1, 1, F] boolean, True = attend
        dev = valid.device.type
        if torch.is_autocast_enabled(dev):
            dtype = torch.get_autocast_dtype(dev)
        mask = torch.zeros(valid.shape, dtype=dtype, device=valid.device)
        return mask.masked_fill(~valid, torch.finfo(dtype).min)[:, None, None, :]  # [B, 1, 1, F] additive

    def encode(self, waves: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Real-length Whisper encoding: waves -> frames [B, F, D] (fp32, zero past each clip's end), lengths [B]."""
        enc = self.audio_encoder
        mel, mel_lengths = self.features(waves)  # [B, M, T], [B]
        if mel.shape[-1] > 2 * enc.config.max_source_positions:
            raise ValueError(f"audio longer than {2 * enc.config.max_source_positions * HOP / SAMPLE_RATE:.0f} s reached the encoder")
        lengths = (mel_lengths + 1) // 2  # [B] frames after the stride-2 conv
        x = nn.functional.gelu(enc.conv1(mel.to(enc.conv1.weight.dtype)))  # [B, D, T]
        if not self.config.pad_audio_to_30s:
            valid = torch.arange(x.shape[-1], device=x.device)[None, :] < mel_lengths.to(x.device)[:, None]  # [B, T]
            x = x * valid[:, None, :]
        x = nn.functional.gelu(enc.conv2(x)).transpose(1, 2)  # [B, F, D]
        f = x.shape[1]
        x = x + enc.embed_positions.weight[:f]  # positional table sliced to the real length
        valid = None
        if not self.config.pad_audio_to_30s and lengths.min() < f:
            valid = torch.arange(f, device=x.device)[None, :] < lengths.to(x.device)[:, None]  # [B, F]
        for layer in enc.layers:
            dtype = next(layer.parameters()).dtype
            x = x.to(dtype)
            out = layer(x, self._encoder_mask(valid, dtype) if valid is not None else None, **self._layer_kw)
            x = out[0] if isinstance(out, tuple) else out
        x = enc.layer_norm(x.to(enc.layer_norm.weight.dtype))  # [B, F, D]
        if self.config.pad_audio_to_30s:
            x = x[:, : int(lengths.max())]
        keep = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]  # [B, F]
        return (x * keep[..., None]).float(), lengths

    def encode_audio(self, waves: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Waves -> what the LLM reads [B, A, H] and its lengths [B]: the adapter's frames, CTC-compressed or
        posterior-weighted when the model was trained so."""
        audio, lengths, _, _ = self.encode_for_answers(waves)
        return audio, lengths

    def encode_for_answers(self, waves: Sequence[torch.Tensor], transcript: bool = False, num_beams: int = 1):
        """:meth:`encode_audio`, and with ``transcript`` and ``config.ctc_length_budget`` each clip's cap on answer
        tokens before the end of turn: the budget x its greedy CTC token count + 1, at least 2 (else None); with
        ``transcript`` and ``config.ctc_decode_weight`` the joint CTC/LLM scorer of the search (``ctc_prefix.py``;
        rows = clips x ``num_beams``), else None. Returns (audio [B, A, H], lengths [B], caps, scorer)."""
        frames, lengths = self.encode(waves)  # [B, F, D], [B]
        audio = self.adapter(frames.to(next(self.adapter.parameters()).dtype), lengths)  # [B, A, H]
        lengths = self.adapter.out_lengths(lengths)
        capped = transcript and self.ctc is not None and self.config.ctc_length_budget > 0
        joint = transcript and self.ctc is not None and self.config.ctc_decode_weight > 0
        if not (self.config.compress_audio or self.config.posterior_input or capped or joint):
            return audio, lengths, None, None
        embedding = self.language_model.get_input_embeddings().weight  # [V, H]
        logits = self.ctc(audio, embedding)  # [B, A, C+1]
        blank = logits.shape[-1] - 1
        caps = None
        if capped:
            best = logits.argmax(dim=-1).cpu()  # [B, A]
            n_ctc = [int((torch.unique_consecutive(row[:n]) != blank).sum()) for row, n in zip(best, lengths.tolist())]
            caps = [max(2, math.ceil(self.config.ctc_length_budget * n) + 1) for n in n_ctc]
        scorer = None
        if joint:
            vocab = torch.tensor(self.config.ctc_vocab, dtype=torch.long)
            scorer = CTCPrefixScorer(torch.log_softmax(logits.float(), dim=-1), lengths,  # [B, A, C+1], [B]
                                     token_classes(vocab, embedding.shape[0]), self.eos_id, self.config.ctc_decode_weight,
                                     self.config.ctc_decode_candidates, beams=num_beams)
        if not (self.config.compress_audio or self.config.posterior_input):
            return audio, lengths, caps, scorer
        if self.config.posterior_input:
            probs = torch.softmax(logits[..., :-1].float(), dim=-1)  # [B, A, C]
            audio = (probs @ self.ctc.token_table(embedding).float()).to(audio.dtype)  # [B, A, H]
        if self.config.compress_audio:
            audio, lengths = ctc_compress(audio, logits.detach(), lengths, blank)  # [B, A', H], [B]
        return audio, lengths, caps, scorer

    # ---- prompts -------------------------------------------------------------------------------------------
    def user_message(self, task: str | None = None, instruction: str | None = None) -> str:
        """The user turn of ``task`` (default ``config.default_task``) with its first instruction or ``instruction``."""
        name = task or self.config.default_task
        if name not in self.config.tasks:
            raise KeyError(f"unknown task {name!r}; this model knows: {', '.join(sorted(self.config.tasks))}")
        spec = self.config.tasks[name]
        return spec["template"].format(audio=self.config.audio_token, instruction=instruction or spec["instruction"])

    def prompt_ids(self, user_message: str) -> tuple[list[int], list[int]]:
        """The chat template around ``user_message``, tokenized on each side of the audio placeholder."""
        tok = self.tokenizer
        messages = [{"role": "user", "content": user_message}]
        if self.config.system_prompt != "default":
            messages.insert(0, {"role": "system", "content": self.config.system_prompt})
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if text.count(self.config.audio_token) != 1:
            raise ValueError(f"the prompt must hold the audio placeholder {self.config.audio_token!r} once: {user_message!r}")
        before, after = text.split(self.config.audio_token)
        return (tok(before, add_special_tokens=False).input_ids, tok(after, add_special_tokens=False).input_ids)

    @property
    def eos_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.tokenizer.eos_token)

    def splice(self, prompts: Sequence[tuple[list[int], list[int]]], audio: torch.Tensor, audio_lengths: torch.Tensor,
               targets: Sequence[list[int]] | None = None, left_pad: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """inputs_embeds [B, L, H], attention_mask [B, L], labels [B, L] (IGNORE outside the targets)."""
        embed = self.language_model.get_input_embeddings()
        dev = audio.device
        seqs, labels = [], []
        for i, (before, after) in enumerate(prompts):
            target = list(targets[i]) if targets is not None else []
            text_emb = embed(torch.tensor(list(before) + list(after) + target, device=dev))  # [P+Y, H]
            nb, a = len(before), int(audio_lengths[i])
            seqs.append(torch.cat([text_emb[:nb], audio[i, :a].to(text_emb.dtype), text_emb[nb:]]))  # [L_i, H]
            lab = torch.full((seqs[-1].shape[0],), IGNORE, dtype=torch.long, device=dev)
            if target:
                lab[-len(target):] = torch.tensor(target, device=dev)
            labels.append(lab)
        l_max, h = max(s.shape[0] for s in seqs), seqs[0].shape[1]
        emb = seqs[0].new_zeros(len(seqs), l_max, h)  # [B, L, H]
        mask = torch.zeros(len(seqs), l_max, dtype=torch.long, device=dev)  # [B, L]
        lab = torch.full((len(seqs), l_max), IGNORE, dtype=torch.long, device=dev)  # [B, L]
        for i, s in enumerate(seqs):
            n = s.shape[0]
            sl = slice(l_max - n, l_max) if left_pad else slice(0, n)
            emb[i, sl], mask[i, sl], lab[i, sl] = s, 1, labels[i]
        return emb, mask, lab

    def _waves(self, waves: Sequence[Any], sampling_rate: int | None) -> list[torch.Tensor]:
        if sampling_rate is not None and sampling_rate != self.config.sampling_rate:
            raise ValueError(f"sampling_rate={sampling_rate}: resample to {self.config.sampling_rate} Hz mono first")
        device = next(self.adapter.parameters()).device
        out = []
        for i, w in enumerate(waves):
            t = torch.as_tensor(w, dtype=torch.float32).to(device)
            if t.dim() != 1:
                raise ValueError(f"clip {i}: expected a mono waveform [N], got shape {tuple(t.shape)}")
            if t.numel() == 0:
                raise ValueError(f"clip {i}: the audio holds no samples")
            if t.numel() > self.config.max_audio_seconds * self.config.sampling_rate:
                raise ValueError(f"clip {i}: {t.numel() / self.config.sampling_rate:.1f} s is longer than this model's "
                                 f"{self.config.max_audio_seconds:g} s; split it first (speechlm transcribe splits at pauses)")
            out.append(t)
        return out

    # ---- inference -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, waves: Sequence[Any], task: str | None = None, instruction: str | None = None,
                 max_new_tokens: int | None = None, num_beams: int = 1, sampling_rate: int | None = None,
                 **generate_kwargs: Any) -> torch.Tensor:
        """One batch: 16-kHz mono waves (arrays or tensors) -> new token ids [B, <=max_new_tokens] (greedy or beam)."""
        spec = self.config.tasks.get(task or self.config.default_task, {})
        max_new_tokens = max_new_tokens or int(spec.get("max_new_tokens", 96))
        clips = self._waves(waves, sampling_rate)
        prompt = self.prompt_ids(self.user_message(task, instruction))
        # a transcript of the task's own instruction may be capped by its CTC length (config.ctc_length_budget)
        transcript = bool(spec.get("transcript")) and instruction is None
        audio, audio_lengths, caps, scorer = self.encode_for_answers(clips, transcript, num_beams)  # [B, A, H], [B]
        emb, mask, _ = self.splice([prompt] * len(clips), audio, audio_lengths, left_pad=True)  # [B, L, H], [B, L]
        tok = self.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.eos_id
        if caps is not None or scorer is not None:
            processors = list(generate_kwargs.pop("logits_processor", None) or [])
            if scorer is not None:  # joint CTC/LLM decoding (config.ctc_decode_weight)
                processors.append(scorer)
            if caps is not None:
                cap = torch.tensor(caps, device=emb.device)  # [B]
                processors.append(EndTurnAtCap(cap.repeat_interleave(num_beams), self.eos_id))  # beams of a clip are adjacent
                max_new_tokens = min(max_new_tokens, int(cap.max()) + 1)  # + the end of turn
            generate_kwargs["logits_processor"] = LogitsProcessorList(processors)
        return self.language_model.generate(inputs_embeds=emb, attention_mask=mask, max_new_tokens=max_new_tokens,
                                            num_beams=num_beams, do_sample=False, eos_token_id=self.eos_id,
                                            pad_token_id=pad_id, **generate_kwargs)

    @torch.no_grad()
    def classify(self, waves: Sequence[Any], labels: Sequence[str] | None = None, task: str | None = None,
                 instruction: str | None = None, sampling_rate: int | None = None) -> list[str]:
        """Closed-set answers: the label (``labels``, default the task's) with the highest log p(label + end of turn)."""
        labels = list(labels or self.config.tasks.get(task or self.config.default_task, {}).get("labels") or [])
        if not labels:
            raise ValueError("classify needs labels (this task has no closed label set)")
        clips = self._waves(waves, sampling_rate)
        prompt = self.prompt_ids(self.user_message(task, instruction))
        audio, audio_lengths = self.encode_audio(clips)  # [B, A, H], [B]
        label_ids = [self.tokenizer(lab, add_special_tokens=False).input_ids + [self.eos_id] for lab in labels]
        n = len(labels)
        rep = torch.arange(len(clips), device=audio.device).repeat_interleave(n)  # [B*n]
        emb, mask, tgt = self.splice([prompt] * len(rep), audio[rep], audio_lengths[rep.to(audio_lengths.device)],
                                     targets=[label_ids[j % n] for j in range(len(rep))], left_pad=False)
        lm = self.language_model
        hidden = getattr(lm, lm.base_model_prefix)(inputs_embeds=emb, attention_mask=mask).last_hidden_state  # [B*n, L, H]
        nxt = tgt[:, 1:]  # [B*n, L-1]
        pick = nxt != IGNORE
        logp = torch.log_softmax(lm.get_output_embeddings()(hidden[:, :-1][pick]).float(), dim=-1)  # [Y, V]
        token_lp = logp.gather(1, nxt[pick][:, None])[:, 0]  # [Y]
        row = torch.arange(len(rep), device=audio.device)[:, None].expand_as(nxt)[pick]  # [Y]
        scores = torch.zeros(len(rep), device=audio.device).index_add_(0, row, token_lp).view(len(clips), n)  # [B, n]
        return [labels[int(j)] for j in scores.argmax(dim=1)]

    @torch.no_grad()
    def transcribe(self, waves: Sequence[Any], task: str | None = None, instruction: str | None = None,
                   max_new_tokens: int | None = None, num_beams: int = 1, batch_size: int = 8,
                   constrained: bool = False, sampling_rate: int | None = None) -> list[str]:
        """Answer the task's instruction (default: ``config.default_task``, usually ASR) about each clip.

        Clips are batched longest first, as ``speechlm transcribe`` batches them, and answers come back in input
        order. ``constrained`` scores each of a closed-set task's labels instead of generating freely.
        """
        order = sorted(range(len(waves)), key=lambda i: -len(waves[i]))
        out = [""] * len(waves)
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            batch = [waves[i] for i in idx]
            if constrained:
                texts = self.classify(batch, task=task, instruction=instruction, sampling_rate=sampling_rate)
            else:
                ids = self.generate(batch, task=task, instruction=instruction, max_new_tokens=max_new_tokens,
                                    num_beams=num_beams, sampling_rate=sampling_rate)
                texts = [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
            for i, t in zip(idx, texts):
                out[i] = t
        return out

    # ---- scoring / fine-tuning ------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                waves: Sequence[Any] | None = None, labels: torch.Tensor | None = None, **kwargs: Any):
        """LLM outputs for token rows that each hold ``config.audio_token_id`` once, where the clip's audio frames go.

        input_ids [B, S] (padding where ``attention_mask`` is 0), waves: one 16-kHz clip per row, labels [B, S]
        (IGNORE = -100 where no loss; only positions after the audio token are read, the prompt before it and the
        audio frames carry none). The rows are re-packed right-padded around the audio frames; returns the
        causal LM's output (``logits`` [B, L, V], ``loss`` when labels are given).
        """
        if waves is None or len(waves) != input_ids.shape[0]:
            raise ValueError("forward needs one clip in `waves` per row of input_ids")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        prompts, targets = [], []
        for i in range(input_ids.shape[0]):
            keep = attention_mask[i].bool()
            ids = input_ids[i][keep].tolist()
            if ids.count(self.config.audio_token_id) != 1:
                raise ValueError(f"row {i}: expected the audio token id {self.config.audio_token_id} exactly once")
            p = ids.index(self.config.audio_token_id)
            prompts.append((ids[:p], ids[p + 1:]))
            targets.append(labels[i][keep].tolist()[p + 1:] if labels is not None else None)
        audio, audio_lengths = self.encode_audio(self._waves(waves, None))  # [B, A, H], [B]
        emb, mask, _ = self.splice(prompts, audio, audio_lengths, left_pad=False)  # [B, L, H], [B, L]
        lab = None
        if labels is not None:
            lab = torch.full(mask.shape, IGNORE, dtype=torch.long, device=mask.device)  # [B, L]
            for i, (before, after) in enumerate(prompts):
                start = len(before) + int(audio_lengths[i])
                lab[i, start:start + len(after)] = torch.tensor(targets[i], device=mask.device)
        return self.language_model(inputs_embeds=emb, attention_mask=mask, labels=lab, **kwargs)


__all__ = ["SpeechLMModel", "SpeechLMConfig"]
