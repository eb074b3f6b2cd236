"""Reports: plain data records extracted from stores, then figures and one HTML page.

:func:`experiment_data` and :func:`comparison_data` read stores into frozen records (tested);
:func:`render_experiment` / :func:`render_comparison` draw them with matplotlib (imported here
only) into PNG files and a self-contained HTML page with the figures embedded.

Figures (paper numbering): 1 - the hand-tuned schedule vs the best schedules found by PBT and
FIRE PBT; 4a - each sub-population's hyperparameter distribution over training, evaluator
successes marked, best schedule overlaid; 4b - the best validation score reached by each step,
distribution across seeds, per method; 5 (V-MPO tasks) - the population's top average episode
return at each step, distribution across experiments, per method; plus a Figure-3-style evaluator-vs-target comparison and
the best member's lineage.

The package: :mod:`._data` (records), :mod:`._story` (words), :mod:`._figures` (matplotlib),
:mod:`._html` (the page), :mod:`.live` (``firepbt report --watch``).
"""

from __future__ import annotations

from ._data import (
    ComparisonData,
    CurvePair,
    EvaluatorEvent,
    ExperimentData,
    Panel,
    SubpopulationBand,
    comparison_data,
    experiment_data,
)
from ._figures import figure1, figure3, figure4a, figure4b, figure5, lineage_figure
from ._html import render_comparison, render_experiment, report
from ._story import fmt_num, story

__all__ = ["ComparisonData", "CurvePair", "EvaluatorEvent", "ExperimentData", "Panel",
           "SubpopulationBand", "comparison_data", "experiment_data", "figure1", "figure3",
           "figure4a", "figure4b", "figure5", "fmt_num", "lineage_figure", "render_comparison",
           "render_experiment", "report", "story"]
