"""Duration-budgeted, length-bucketed batch sampler with DDP sharding and exact mid-epoch resume.

Why budget by seconds: speech clips range from half a second to thirty, so a fixed batch *size*
either wastes the GPU on short clips or runs out of memory on long ones. A budget of total audio
seconds per batch keeps the work per step roughly constant.

Why bucket: clips in a batch are padded to the longest one, so batching similar lengths together
avoids computing on padding. Each epoch the cuts are shuffled and cut into *buckets* (random pools
of ``bucket_size`` cuts); each bucket is sorted by duration and packed greedily into batches; then
the order of all batches is shuffled. Batch composition therefore changes from epoch to epoch (the
pools differ) while lengths inside a batch stay close. Everything is a function of ``(seed, epoch)``
only, so every DDP rank computes the same list of global batches without communicating.

DDP: ``max_seconds`` and ``max_batch`` apply to the *global* batch (summed over ranks), so the
effective batch does not change with the number of GPUs. Rank ``r`` of ``W`` takes
``global_batch[r::W]``; since a batch is sorted by duration this also balances the seconds per rank.
A global batch with fewer cuts than ranks cannot give every rank a cut. Such batches (typically
the last, longest-clip batch of a bucket) are pooled across buckets and packed again; whatever still
has fewer cuts than ranks is dropped for this epoch (counted in
:attr:`DurationBatchSampler.dropped`), so that all ranks run the same number of steps and no rank
ever gets an empty batch. With ``max_seconds >= world_size * longest clip`` at most
``world_size - 1`` cuts per epoch are dropped, and since buckets are reshuffled each epoch they are
different cuts each time. Without shuffling (evaluation) use ``world_size=1`` or accept the drop.

Resume: :meth:`state_dict` stores the epoch and the number of batches already yielded in it;
after :meth:`load_state_dict`, iteration yields exactly the remaining batches of that epoch.

Elastic resume (a run saved with W ranks resumed with W'): the position counts *global* batches, which every
rank iterates alike, so it means the same with any number of ranks. Only the pooling above depends on W; the
epoch in progress therefore keeps the plan it was saved with (planned for W) and later epochs are planned for
W'. With W' > W a global batch of that epoch may then hold fewer cuts than ranks, and a rank's share may be
empty: the training loop steps such a rank with a stand-in batch of weight 0.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterator, Sequence

import numpy as np

__all__ = ["DurationBatchSampler"]


class DurationBatchSampler:
    """Yields lists of dataset indices whose durations sum to at most ``max_seconds``.

    Usable as ``torch.utils.data.DataLoader(dataset, batch_sampler=sampler)``.

    Args:
        durations: duration in seconds of every item, indexed like the dataset.
        max_seconds: audio-seconds budget of one global batch (all ranks together).
        max_batch: optional cap on cuts per global batch (e.g. to bound text-side memory).
        shuffle: False gives one fixed, fully sorted order (for evaluation); True shuffles per epoch.
        seed: base seed; the plan of an epoch depends only on ``(seed, epoch)``.
        bucket_size: cuts per sort pool; bigger pools mean tighter lengths but less randomness in
            batch composition. ``None`` sorts the whole dataset as one pool.
        rank, world_size: this process's DDP rank and the number of ranks.
        drop_last: drop the last, partly filled batch of each bucket (rarely needed: batch sizes
            already vary with duration).

    A single cut longer than ``max_seconds`` still forms a batch of its own (with a warning at
    construction) rather than being silently lost; filter such cuts with ``validate(max_duration=...)``.
    """

    def __init__(
        self,
        durations: Sequence[float],
        max_seconds: float,
        max_batch: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        bucket_size: int | None = 2000,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        d = np.asarray(durations, dtype=np.float64)
        if d.ndim != 1:
            raise ValueError("durations must be a 1-D sequence of seconds")
        if d.size and (not np.all(np.isfinite(d)) or d.min() < 0):
            raise ValueError("durations must be finite and non-negative (None in a manifest? run validate())")
        if max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, got {max_seconds}")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if max_batch is not None and max_batch < world_size:
            raise ValueError(f"max_batch={max_batch} < world_size={world_size}: some rank would get no cut")
        if bucket_size is not None and bucket_size < 1:
            raise ValueError(f"bucket_size must be >= 1 or None, got {bucket_size}")
        self.durations = d
        self.max_seconds = float(max_seconds)
        self.max_batch = max_batch
        self.shuffle = shuffle
        self.seed = int(seed)
        self.bucket_size = bucket_size
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        """Current epoch; the plan is a function of (seed, epoch)."""
        self.position = 0
        """Batches of the current epoch already yielded (what state_dict saves)."""
        self.dropped = 0
        """Cuts of the last planned epoch left out because they could not fill a batch for every rank."""
        self._plan_cache: tuple[int, int, list[list[int]]] | None = None
        self._saved_plan: tuple[int, int] | None = None
        """(epoch, world size) of a resumed epoch planned for another world size (elastic resume)."""
        n_long = int((d > self.max_seconds).sum())
        if n_long:
            warnings.warn(f"{n_long} item(s) are longer than max_seconds={self.max_seconds:g} s; each will form "
                          "a batch of its own (over budget). Filter them with validate(max_duration=...).",
                          stacklevel=2)

    # -- planning -------------------------------------------------------------------------------

    def _pack(self, order: np.ndarray) -> list[list[int]]:
        """Greedy packing of ``order`` (already sorted by duration) into budgeted batches."""
        batches: list[list[int]] = []
        cur: list[int] = []
        total = 0.0
        cap = self.max_batch or math.inf
        for i in order.tolist():
            di = self.durations[i]
            if cur and (total + di > self.max_seconds + 1e-9 or len(cur) >= cap):
                batches.append(cur)
                cur, total = [], 0.0
            cur.append(i)
            total += di
        if cur:
            # The tail of a bucket is usually under-filled; drop_last trades it for uniform batches.
            if not (self.drop_last and batches):
                batches.append(cur)
        return batches

    def _plan_world(self, epoch: int) -> int:
        """The world size ``epoch`` is planned for: this sampler's, or the saved one for a resumed epoch."""
        if self._saved_plan is not None and self._saved_plan[0] == epoch:
            return self._saved_plan[1]
        return self.world_size

    def _global_batches(self, epoch: int) -> list[list[int]]:
        """All global batches of ``epoch`` in yield order (identical on every rank)."""
        world = self._plan_world(epoch)
        if self._plan_cache is not None and self._plan_cache[:2] == (epoch, world):
            return self._plan_cache[2]
        n = len(self.durations)
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch])
            perm = rng.permutation(n)
        else:
            rng = None
            perm = np.arange(n)
        size = n if (self.bucket_size is None or not self.shuffle) else self.bucket_size
        batches: list[list[int]] = []
        for lo in range(0, n, max(size, 1)):
            pool = perm[lo:lo + size]
            # Stable sort: equal durations keep the random pool order, so ties also vary per epoch.
            pool = pool[np.argsort(self.durations[pool], kind="stable")]
            batches.extend(self._pack(pool))
        self.dropped = 0
        if world > 1:
            # A bucket's last batch (its longest clips) can have fewer cuts than ranks. Pool those
            # tails from all buckets and pack them again, so only the final remainder is dropped.
            small = [b for b in batches if len(b) < world]
            if small:
                batches = [b for b in batches if len(b) >= world]
                rest = np.array([i for b in small for i in b], dtype=np.int64)
                rest = rest[np.argsort(self.durations[rest], kind="stable")]
                for b in self._pack(rest):
                    if len(b) >= world:
                        batches.append(b)
                    else:
                        self.dropped += len(b)
        if rng is not None:
            order = rng.permutation(len(batches))
            batches = [batches[j] for j in order]
        self._plan_cache = (epoch, world, batches)
        return batches

    # -- public API -----------------------------------------------------------------------------

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """The full list of global batches of an epoch (default: the current one), for inspection."""
        return [list(b) for b in self._global_batches(self.epoch if epoch is None else epoch)]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate. A different epoch restarts at its first batch; setting the
        current epoch again keeps the position, so ``load_state_dict`` then ``set_epoch`` resumes."""
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self.position = 0

    def __len__(self) -> int:
        """Batches per rank in a full pass of the current epoch (the same on every rank)."""
        return len(self._global_batches(self.epoch))

    def remaining(self) -> int:
        """Batches the next ``__iter__`` will yield (``len(self) - position``)."""
        return max(0, len(self) - self.position)

    def __iter__(self) -> Iterator[list[int]]:
        """Yield this rank's share of each remaining global batch of the current epoch (empty only in an
        epoch resumed with more ranks than it was planned for; see the module doc).

        After a complete pass the sampler moves to the next epoch by itself, so a loop that never
        calls :meth:`set_epoch` still sees fresh shuffles; calling ``set_epoch(e)`` each epoch works too.
        """
        epoch = self.epoch
        plan = self._global_batches(epoch)
        while self.position < len(plan):
            batch = plan[self.position]
            self.position += 1
            yield batch[self.rank::self.world_size]
        if self.epoch == epoch:
            self.epoch, self.position = epoch + 1, 0

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Epoch and position, plus what must match for a resume to be exact.

        ``consumed``: batches the training loop has actually finished in this epoch. Pass it when a
        DataLoader with workers prefetches, because then the sampler runs a few batches ahead of
        training and its own ``position`` would skip the prefetched-but-unused batches on resume.
        """
        return {
            "epoch": self.epoch,
            "position": self.position if consumed is None else int(consumed),
            "seed": self.seed,
            "num_items": len(self.durations),
            "max_seconds": self.max_seconds,
            "max_batch": self.max_batch,
            "bucket_size": self.bucket_size,
            "shuffle": self.shuffle,
            "world_size": self._plan_world(self.epoch),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore epoch and position. Raises ValueError if the data or batching settings differ,
        since the saved position would then point into a different list of batches."""
        for key in ("seed", "num_items", "max_seconds", "max_batch", "bucket_size", "shuffle"):
            if key in state:
                mine = len(self.durations) if key == "num_items" else getattr(self, key)
                if state[key] != mine:
                    raise ValueError(f"sampler state was saved with {key}={state[key]!r} but this sampler has "
                                     f"{key}={mine!r}; the saved position would not resume the same batches")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        saved_world = int(state.get("world_size", self.world_size))
        # elastic resume: the epoch in progress keeps the plan it was saved with (its position counts its batches)
        self._saved_plan = (self.epoch, saved_world) if saved_world != self.world_size else None
