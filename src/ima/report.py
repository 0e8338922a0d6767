"""Tables of robustness results in the layout of the paper's Tables 1-3.

One row per run, one column per noise level (accuracy in percent, two decimals as in the
paper), plus the AUC. Markdown for the screen and for files, CSV for spreadsheets.
Plotting and reporting only read results; they never compute them.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from .evaluation import EvaluationResult

__all__ = ["Table", "load_results", "robustness_table"]


@dataclass
class Table:
    """A header and rows of strings; ``title`` names what the numbers are."""

    title: str
    header: list[str]
    rows: list[list[str]]

    def to_markdown(self) -> str:
        cells = [self.header, *self.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.header))]

        def line(cells):
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

        sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        body = [line(self.header), sep, *(line(r) for r in self.rows)]
        return (f"{self.title}\n\n" if self.title else "") + "\n".join(body) + "\n"

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows(self.rows)
        return buffer.getvalue()


def load_results(run_dirs, name: str = "pgd-l2-test") -> list[tuple[str, EvaluationResult]]:
    """``(label, result)`` for each run folder, reading ``eval/<name>.json``; the label is
    the folder's name."""
    out = []
    for run_dir in run_dirs:
        path = Path(run_dir) / "eval" / f"{name}.json"
        if not path.is_file():
            have = sorted(p.stem for p in (Path(run_dir) / "eval").glob("*.json"))
            raise FileNotFoundError(
                f"{str(run_dir)!r} has no evaluation {name!r} (run `ima evaluate {run_dir}`); "
                f"it has: {', '.join(have) or 'none'}"
            )
        out.append((Path(run_dir).resolve().name, EvaluationResult.load(path)))
    return out


def _fmt_eps(e: float) -> str:
    return f"{e:g}"


def robustness_table(results: list[tuple[str, EvaluationResult]]) -> Table:
    """Accuracy (%) of each labelled result at every noise level any of them has."""
    if not results:
        raise ValueError("robustness_table needs at least one result")
    levels = sorted({e for _, r in results for e in r.eps})
    rows = []
    for label, r in results:
        by_eps = dict(zip(r.eps, r.accuracy, strict=True))
        cells = [f"{100 * by_eps[e]:.2f}" if e in by_eps else "" for e in levels]
        rows.append([label, *cells, f"{r.auc:.4f}"])
    first = results[0][1]
    norms = sorted({r.norm for _, r in results})
    subsets = sorted({r.subset or f"all {r.n_samples}" for _, r in results})
    steps = sorted({r.params.get("steps") for _, r in results})
    title = (
        f"Accuracy (%) under {'/'.join(map(str, steps))}-PGD, {'/'.join(n.upper() for n in norms)} "
        f"norm, split {first.split}, samples: {'; '.join(subsets)}"
    )
    return Table(title, ["Noise", *map(_fmt_eps, levels), "AUC"], rows)
