"""Manifest cuts -> model batches: audio loading, task prompts, answer tokens, collation.

The dataset is where a task record meets a manifest line: it draws an instruction paraphrase
(deterministically from seed, epoch and cut id, so a resumed run sees the same prompts), formats the user
message, and turns the task's target field into answer tokens.
"""

from __future__ import annotations

import random
from functools import lru_cache

import torch
from torch.utils.data import Dataset

from speechlm.data.audio import AudioError, load_audio
from speechlm.data.manifest import Cut
from speechlm.model.labels import clip_label_targets
from speechlm.model.speechlm import Batch, PromptFormatter, PromptIds
from speechlm.tasks import TASKS, Task


class SpeechDataset(Dataset):
    def __init__(self, cuts: list[Cut], task: Task, formatter: PromptFormatter, seed: int = 0,
                 held_out_instructions: bool = False, with_targets: bool = True, skip_bad: bool = False,
                 tasks: list[Task] | None = None, ctc_targets: bool = False, frame_mask: float = 0.0,
                 label_targets: bool = False):
        self.cuts = cuts
        self.task = task
        self.tasks = tasks  # multi-task: the task of each example (speechlm.tasks.mixture), else `task` for all
        self.formatter = formatter
        self.seed = seed
        self.epoch = 0
        self.held_out = held_out_instructions
        self.with_targets = with_targets
        self.skip_bad = skip_bad
        self.ctc_targets = ctc_targets  # also tokenize each transcript as the CTC target (a model with a CTC head)
        self.frame_mask = frame_mask  # share of cached frames masked (data.frame_mask); training datasets only
        # every closed-set label field of a line as a clip-level target (a model with a label head)
        self.label_targets = label_targets
        self._label_ids = lru_cache(maxsize=256)(self.formatter.ctc_ids)
        # the closed-set tasks, once (not per item): those whose fields become clip-level targets
        self._label_tasks = [t for t in TASKS.values() if t.labels is not None] if label_targets else []
        self._prompt = lru_cache(maxsize=256)(self._prompt_uncached)
        # a manifest written by `speechlm prepare --features` carries cached frozen-encoder outputs
        self.use_features = bool(cuts) and "features" in cuts[0].labels

    def __len__(self) -> int:
        return len(self.cuts)

    def _prompt_uncached(self, task: Task, instruction: str) -> PromptIds:
        return self.formatter.prompt_ids(task.user_message(instruction, self.formatter.audio_token))

    def __getitem__(self, i: int) -> dict | None:
        cut = self.cuts[i]
        if self.use_features:
            from speechlm.model.features import load_features

            try:
                frames = load_features(cut, dtype=None)  # [F, D], fp16 as stored: half the IPC from workers
            except (FileNotFoundError, KeyError, ValueError) as e:
                if self.skip_bad:
                    return None
                raise ValueError(f"{cut.source or cut.id}: cached features: {e}") from e
            item = self.build_item(cut.id, None, cut.text, cut.labels, self.epoch, cut.source, self._task(i))
            item["frames"] = mask_frames(frames, self.frame_mask, f"{self.seed}:{self.epoch}:{cut.id}") if self.frame_mask else frames
            return item
        try:
            wave = load_audio(cut.audio, start=cut.start, duration=cut.duration)  # [N] float32, 16 kHz
        except AudioError as e:
            if self.skip_bad:
                return None
            raise AudioError(f"{cut.source or cut.id}: {e}") from e
        return self.build_item(cut.id, wave, cut.text, cut.labels, self.epoch, cut.source, self._task(i))

    def _task(self, i: int) -> Task:
        return self.tasks[i] if self.tasks is not None else self.task

    def build_item(self, cut_id: str, wave, text: str | None, labels: dict, epoch: int, source: str = "",
                   task: Task | None = None) -> dict:
        """Prompt (instruction drawn from seed, epoch, task and id: a resumed run sees the same), audio, answer."""
        task = task or self.task
        rng = random.Random(f"{self.seed}:{epoch}:{task.name}:{cut_id}")
        prompt = self._prompt(task, task.instruction(rng, held_out=self.held_out))
        item = {"id": cut_id, "prompt": prompt}
        if wave is not None:
            item["wave"] = torch.as_tensor(wave)
        if self.with_targets:
            try:
                item["target"] = self.formatter.target_ids(task.target_text(text, labels))
            except ValueError as e:
                raise ValueError(f"{source or cut_id}: {e}") from e
            if self.ctc_targets:  # what is spoken, whatever the task asks: the CTC alignment target (speechlm.model.ctc)
                item["ctc_target"] = self.formatter.ctc_ids(text) if text and text.strip() else []
            if self.label_targets:  # every label the line has, whatever the task asks (speechlm.model.labels)
                item["label_targets"] = clip_label_targets(labels, self._label_tasks, self._label_ids)
        return item

    def from_shard_item(self, it: dict) -> dict:
        """Transform for a ShardDataset stream item (runs in dataloader workers)."""
        return self.build_item(it["id"], it["wave"], it["text"], it["labels"], it["epoch"], f"shard item {it['id']}")


def mask_frames(frames: torch.Tensor, share: float, key: str, max_width: int = 10, channel_masks: int = 2,
                max_channels: int = 27) -> torch.Tensor:
    """SpecAugment on encoder frames [F, D] -> a masked copy [F, D] (data.frame_mask).

    Time masks of 1..``max_width`` frames (SpecAugment's T = 10 at 50 frames/s is 0.2 s, about a syllable) are
    drawn until about ``share`` of the frames is covered; then ``channel_masks`` masks of 1..``max_channels``
    channels (SpecAugment's LibriSpeech policy: 2 masks, F = 27). Masked values are 0, which after the adapter's
    LayerNorm is the mean: the frame says nothing rather than something false. The draw depends on ``key`` only
    (seed, epoch, clip), so a resumed run sees the same masks.
    """
    if share <= 0 or frames.shape[0] == 0:
        return frames
    rng = random.Random(key)
    f, d = frames.shape  # [F, D]
    out = frames.clone()
    covered, budget = 0, share * f
    while covered < budget:
        w = rng.randint(1, max_width)
        t0 = rng.randrange(0, max(1, f - w + 1))
        out[t0:t0 + w] = 0
        covered += w
    for _ in range(channel_masks):
        w = rng.randint(1, min(max_channels, d))
        c0 = rng.randrange(0, d - w + 1)
        out[:, c0:c0 + w] = 0
    return out


def collate(items: list[dict | None]) -> Batch | None:
    """Items -> Batch; items that failed to load under ``skip_bad`` (None) are dropped."""
    items = [it for it in items if it is not None]
    if not items:
        return None
    frames = [it["frames"] for it in items] if "frames" in items[0] else None
    return Batch(
        ids=[it["id"] for it in items],
        waves=[] if frames is not None else [it["wave"] for it in items],
        prompts=[it["prompt"] for it in items],
        targets=[it["target"] for it in items] if "target" in items[0] else None,
        frames=frames,
        ctc_targets=[it["ctc_target"] for it in items] if "ctc_target" in items[0] else None,
        label_targets=[it["label_targets"] for it in items] if "label_targets" in items[0] else None,
    )
