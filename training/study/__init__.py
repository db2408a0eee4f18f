"""`make study`: the design's whole experiment, planned against the lease before it runs.

TASKS x strategies x worker counts x per-device batch sizes, each cell a real `make train` run
(the same loop, evaluation, checkpoints and MLflow run, as a child of the study's run) to a
budget equal across cells (epochs, or training samples), in weak or strong scaling. Before
anything runs, each cell's time is estimated (from an earlier finished run on the same
hardware, else a short probe with the bench's measurement) and what does not fit before the
lease's end minus the checkpoint guard (or STUDY_HOURS) is left out, by name. A stopped study
continues with RESUME=1, cell by cell. One report answers the design's three questions.

The package, by concern: `cells` (the matrix and each cell's settings), `estimate` (a cell's
time from history or a probe), `probe` (the measurement), `plan` (checks, estimates, the fit
and its printout), `record` (what RESUME=1 continues), `run` (driving the cells), `results`
(each cell's row from MLflow), `report` and `plots`."""

from training.study.plan import StudyPlan, fit, plan, refuse_axes, show
from training.study.run import run

__all__ = ["StudyPlan", "fit", "plan", "refuse_axes", "run", "show"]
