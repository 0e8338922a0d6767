"""A self-contained HTML page on a set of runs: the robustness table, the clinical numbers
and confusion matrices, and the figures."""

from __future__ import annotations

import logging
from pathlib import Path

from .tables import Table, clinical_tables, load_results, robustness_table

logger = logging.getLogger(__name__)

__all__ = ["html_report"]


_HTML_STYLE = """
body { font-family: sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
caption { text-align: left; font-weight: bold; padding-bottom: 0.4em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
"""


def html_report(run_dirs, eval_name: str = "pgd-l2-test", *, metric: str = "accuracy",
                title: str | None = None, table: Table | None = None) -> str:
    """A self-contained HTML page on a set of runs: the robustness table; for
    classification results the clinical numbers of each run (per-class accuracy,
    sensitivity and specificity of the named positive class, Wilson intervals) and its
    confusion matrix at each noise level; the robustness curves, the training curves,
    the margin histograms (runs of ima/mma) and, for 2-D data, the decision boundaries;
    figures are embedded as base64 PNGs.

    A section that does not apply to these runs (clinical numbers of segmentation, no
    margins, not 2-D data) is left out; a figure that cannot be drawn (no metrics yet, a
    run naming its own code without ``--trust-code``) is left out with a logged warning
    saying why. ``table``: the table to show instead
    of the ``metric`` table of ``eval_name`` (e.g. the one ``ima report`` printed).
    """
    import base64
    from html import escape

    from . import figures as plots

    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("html_report needs at least one run folder")
    results = load_results(run_dirs, eval_name)
    names = ", ".join(label for label, _ in results)
    title = title or f"Robustness report: {names}"
    parts = [f"<h1>{escape(title)}</h1>",
             f"<p>Evaluation <code>{escape(eval_name)}</code> of {len(run_dirs)} run(s): "
             f"{escape(', '.join(str(d) for d in run_dirs))}</p>",
             "<h2>Robustness</h2>",
             (table or robustness_table(results, metric=metric)).to_html()]
    clinical = clinical_tables(results)
    if clinical:
        parts.append("<h2>Clinical numbers and confusion matrices</h2>")
        parts += [t.to_html() for t in clinical]

    def figure(heading, alt, build):
        try:
            fig = build()
        except (ValueError, FileNotFoundError, PermissionError) as err:
            logger.warning("html report: figure %r left out: %s", heading, err)
            return
        data = base64.b64encode(plots.figure_png(fig)).decode("ascii")
        parts.append(f"<h2>{escape(heading)}</h2>")
        parts.append(f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">')

    figure("Accuracy against noise level", "robustness curves",
           lambda: plots.plot_noise(run_dirs, results=results))
    figure("Training curves", "training curves", lambda: plots.plot_curves(run_dirs))
    with_margins = [d for d in run_dirs if _method_name(d) in ("ima", "mma")]
    if with_margins:
        figure("Estimated margins", "margin histograms",
               lambda: plots.plot_margins(with_margins))
    if all(_two_dimensional(d) for d in run_dirs):
        figure("Decision boundaries", "decision boundaries",
               lambda: plots.plot_boundaries(run_dirs)[0])
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{_HTML_STYLE}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")


def _method_name(run_dir) -> str | None:
    """The run's method name, read from its config as written (nothing imported)."""
    from ..config import read_config_file

    try:
        return read_config_file(Path(run_dir) / "config.yaml")["method"]["name"]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def _two_dimensional(run_dir) -> bool:
    from ..assemble import dataset_from_config
    from ..runs import read_config

    try:
        return tuple(dataset_from_config(read_config(run_dir), "test")[0][0].shape) == (2,)
    except (FileNotFoundError, ValueError, KeyError, TypeError, PermissionError):
        return False  # no data (or data only the run's own untrusted code can build)
