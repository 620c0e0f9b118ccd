"""Checkpoints and the offsets they hold: restore (re-sharding the data state when the world size changed), and
flush dead letters → gather every rank's data state → save (rank 0) → barrier → commit each rank's offsets.

Offsets are committed only once the checkpoint holding them is durable, so a crash re-reads everything after it.
A checkpoint that cannot be written (a full disk, say) is logged and skipped: the previous file stays the newest
valid one, nothing is committed, and training goes on to the next checkpoint, which tries again.
With DDP every rank calls the same collectives in the same order: one gather, then (unless a rank could not flush
its dead letters, which every rank then sees) a second one, after rank 0's write, that tells every rank whether it
was written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from ingest.bus import TopicPartition
from ingest.runtime.dead_letters import DeadLetters
from ingest.runtime.durable_files import os_error_reason
from trainer import distributed
from trainer.checkpoint import save_checkpoint
from trainer.config import ModelConfig, TrainerSettings
from trainer.data.batches import BatchPlan, BatchPlanner, record_from_state
from trainer.data.heldout import HeldOutSet
from trainer.data.replay import ReplayBuffer
from trainer.data.window_source import check_record
from trainer.distributed import Distributed
from trainer.learner import Learner
from trainer.metrics import TrainerMetrics

log = logging.getLogger("trainer")

# How long a commit on the consumer thread may take before the loop carries on (it is retried at the next one).
_COMMIT_TIMEOUT_S = 30.0


class CheckpointCoordinator:
    """Writes checkpoints and commits their offsets; restores a run from one.

    Args:
        settings: the resolved settings (checkpoint directory and retention; saved in each checkpoint).
        model_config: the architecture (saved in each checkpoint).
        config_hash: the hash of architecture and loss.
        learner: model, EMA, optimiser, schedule and random states.
        planner: this rank's consumed offsets and windows taken but not planned; commits go to its source.
        replay: this rank's replay buffer.
        heldout: this rank's held-out set.
        dead_letters: flushed before every checkpoint (its offsets move past them).
        dist: the process group (or none).
        metrics: the trainer's metrics.
    """

    def __init__(
        self,
        settings: TrainerSettings,
        model_config: ModelConfig,
        config_hash: str,
        learner: Learner,
        planner: BatchPlanner,
        replay: ReplayBuffer,
        heldout: HeldOutSet,
        dead_letters: DeadLetters,
        dist: Distributed,
        metrics: TrainerMetrics,
    ) -> None:
        self.settings = settings
        self.model_config = model_config
        self.config_hash = config_hash
        self.learner = learner
        self.planner = planner
        self.replay = replay
        self.heldout = heldout
        self.dead_letters = dead_letters
        self.dist = dist
        self.metrics = metrics
        self.committed: dict[TopicPartition, int] = {}
        self.checkpointed_step = -1

    # --- restore --------------------------------------------------------------------------------------------
    def restore(self, payload: dict[str, Any]) -> tuple[int, list[BatchPlan]]:
        """Load a checkpoint into the learner and this rank's data state; its step and the batches it had planned."""
        dist = self.dist
        self.learner.load_state_dict(payload)
        step = int(payload["step"])
        ranks: list[dict[str, Any]] = payload["ranks"]
        if len(ranks) == dist.world_size:
            mine = ranks[dist.rank]
            self.planner.load_state_dict(mine["planner"])
            self.replay.load_state_dict(mine["replay"])
            pending = [BatchPlan.from_state(plan) for plan in mine["pending"]]
            self.heldout.load_state_dict(mine["heldout"])
        else:
            pending = self._restore_resized(ranks)
        self.metrics.step.set(step)
        log.info(
            "resumed at step %d; consumer offsets %s",
            step,
            {f"{tp.topic}[{tp.partition}]": offset for tp, offset in sorted(self.planner.consumed.items())},
        )
        return step, pending

    def _restore_resized(self, ranks: list[dict[str, Any]]) -> list[BatchPlan]:
        """The world size changed: every rank gets all offsets (highest wins) and a share of the saved data."""
        dist = self.dist
        log.warning(
            "checkpoint from %d process(es), now %d: redistributing its data state", len(ranks), dist.world_size
        )
        consumed: dict[TopicPartition, int] = {}
        for state in ranks:
            for topic, partition, offset in state["planner"]["consumed"]:
                key = TopicPartition(topic, int(partition))
                consumed[key] = max(int(offset), consumed.get(key, 0))
        for old_rank, state in enumerate(ranks):
            if old_rank == dist.rank:  # replay, held-out set and random state of the same rank number
                self.planner.load_state_dict(state["planner"])
                self.replay.load_state_dict(state["replay"])
                self.heldout.load_state_dict(state["heldout"])
        self.planner.carry = []
        pending: list[BatchPlan] = []
        for old_rank, state in enumerate(ranks):  # windows taken but not trained: old rank r goes to r % world
            if old_rank % dist.world_size == dist.rank:
                carry = [record_from_state(record) for record in state["planner"]["carry"]]
                self.planner.carry.extend(check_record(record, self.model_config.window) for record in carry)
                pending.extend(BatchPlan.from_state(plan) for plan in state["pending"])
        self.planner.consumed = consumed
        return pending

    # --- checkpoint → commit --------------------------------------------------------------------------------
    def checkpoint(self, step: int, in_flight: Sequence[BatchPlan], last_eval: dict[str, float]) -> bool:
        """Checkpoint durably, then commit the offsets it holds; False if it could not be written.

        Args:
            step: the number of steps trained.
            in_flight: this rank's planned batches not yet trained on.
            last_eval: the latest evaluation's metrics (saved with the checkpoint).
        """
        started = time.monotonic()
        # Dead letters first: the checkpoint's offsets move past them, so they must be on the bus before it exists.
        try:
            self.dead_letters.flush()
            flushed = True
        except Exception as error:
            log.error("checkpoint postponed: dead letters not acknowledged (%s)", error)
            flushed = False
        gathered = distributed.gather_objects(
            {"ok": flushed, "state": self._rank_state(in_flight) if flushed else None}, self.dist
        )
        if not all(rank["ok"] for rank in gathered):
            return False
        saved = True
        if self.dist.is_main:
            saved = self._save(step, [rank["state"] for rank in gathered], last_eval, started)
        # Also the barrier: every rank commits only after rank 0's file is durable, and none if it was not written.
        if not all(distributed.gather_objects(saved, self.dist)):
            return False
        self.checkpointed_step = step
        self.metrics.checkpoint_written()
        self.metrics.checkpoint_seconds.observe(time.monotonic() - started)
        self._commit()
        return True

    def _rank_state(self, in_flight: Sequence[BatchPlan]) -> dict[str, Any]:
        return {
            "planner": self.planner.state_dict(),
            "replay": self.replay.state_dict(),
            "pending": [plan.state_dict() for plan in in_flight],
            "heldout": self.heldout.state_dict(),
        }

    def _save(self, step: int, states: list[Any], last_eval: dict[str, float], started: float) -> bool:
        """Write the checkpoint of ``step``; False (logged) if the file system refused it."""
        settings = self.settings
        payload = {
            "step": step,
            "model_config": self.model_config.model_dump(mode="json"),
            "settings": settings.model_dump_json(),
            "config_hash": self.config_hash,
            **self.learner.state_dict(),
            "ranks": states,
            "last_eval": dict(last_eval),
            "time": time.time(),
        }
        try:
            path = save_checkpoint(settings.checkpoint_dir, step, payload, settings.checkpoint.keep_last)
        except OSError as error:  # write_atomically removed its temporary file; the older checkpoints are untouched
            log.error(
                "CHECKPOINT NOT WRITTEN at step %d in %s: %s. The previous checkpoint is intact and no offset is "
                "committed past it; training goes on and the next checkpoint tries again",
                step,
                settings.checkpoint_dir,
                os_error_reason(error),
            )
            return False
        log.info("checkpoint %s written in %.2f s", path.name, time.monotonic() - started)
        return True

    def _commit(self) -> None:
        source = self.planner.source
        if source is None or not self.planner.consumed:
            return
        try:
            committed = source.commit(self.planner.consumed).result(timeout=_COMMIT_TIMEOUT_S)
        except Exception as error:  # the next checkpoint commits again; at worst windows are re-read
            log.warning("offsets not committed (they will be at the next checkpoint): %s", error)
            return
        self.committed.update(committed)
