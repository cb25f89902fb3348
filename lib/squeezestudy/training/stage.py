"""Where a run is, so that an interrupted run says what is saved and how to continue."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from squeezestudy.training.config import RESUME_HINT
from squeezestudy.training.rundir import CHECKPOINT


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a kernel interrupt) during `fit`; the message says what is saved."""

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return [f"TrainingInterrupted: {self}"]


SAVING = "saving its checkpoint"


def file_identity(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


@dataclass
class Stage:
    """Where a run is, for the message when it is interrupted."""

    epoch: int
    phase: str
    saved: int  # epochs in the checkpoint on disk
    started: bool = False
    replacing: tuple | None = None  # identity of the checkpoint file a save is replacing
    changed_dir: bool = False  # the old run's files have been deleted

    def interrupted(self, out_path: Path | None, epochs: int) -> str:
        if self.phase == SAVING and file_identity(out_path / CHECKPOINT) != self.replacing:
            self.saved = self.epoch + 1  # interrupted after the rename: the new checkpoint is there
        if self.epoch >= epochs:
            where = f"interrupted while {self.phase}"
        else:
            where = (f"interrupted {'in' if self.started else 'before'} epoch {self.epoch + 1} of "
                     f"{epochs} ({self.phase})")
        if out_path is None:
            return f"{where}; nothing is kept on disk (no out_dir was given)"
        if not self.changed_dir:
            return f"{where}; nothing in {out_path} was changed"
        if self.saved == 0:
            return f"{where}; no epoch was saved in {out_path} yet: run it again to start over"
        saved = "epoch 1 is" if self.saved == 1 else f"epochs 1-{self.saved} are"
        unfinished = " (the run is not finished)" if self.saved >= epochs else ""
        return f"{where}; {saved} saved in {out_path}{unfinished}, continue with {RESUME_HINT}"
