"""Tables of robustness results in the layout of the paper's Tables 1-3 and 10-15.

One row per run, one column per noise level (accuracy in percent, two decimals as in the
paper), plus the AUC; for segmentation results also the TVDI or ADI (appendix I, in
percent, no AUC: Tables 10-15). For classification results also the clinical numbers
(per-class accuracy, sensitivity and specificity of the named positive class, with Wilson
intervals) and a confusion matrix per noise level, classes by name. Markdown for the
screen and for files, CSV for spreadsheets.
Plotting and reporting only read results; they never compute them.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from ..evaluation import EvaluationResult
from ..validation import check_choice

__all__ = [
    "METRICS", "Table", "clinical_table", "clinical_tables", "confusion_tables",
    "load_results", "report_tables", "robustness_table", "unique_labels",
]

#: what a table can show: the name of the result field and its title
METRICS = {
    "accuracy": "Accuracy",
    "tvdi": "Total Voxel Dice Index",
    "adi": "Average Dice Index",
}


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

    def to_html(self) -> str:
        """The table as an HTML ``<table>`` with its title as caption (text escaped)."""
        from html import escape

        head = "".join(f"<th>{escape(c)}</th>" for c in self.header)
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>\n"
            for row in self.rows
        )
        caption = f"<caption>{escape(self.title)}</caption>" if self.title else ""
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>\n"

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows(self.rows)
        return buffer.getvalue()


def load_results(run_dirs, name: str = "pgd-l2-test") -> list[tuple[str, EvaluationResult]]:
    """``(label, result)`` for each run folder, reading ``eval/<name>.json``.

    The label is the folder's name, with as many parent folders as it takes to tell runs
    of the same name apart (``a/run``, ``b/run``), and ``(epoch N of M)`` when the result
    is of another checkpoint than the run's last epoch."""
    from ..runs import read_metrics

    out = []
    labels = unique_labels(run_dirs)
    for run_dir, label in zip(run_dirs, labels, strict=True):
        path = Path(run_dir) / "eval" / f"{name}.json"
        if not path.is_file():
            have = sorted(p.stem for p in (Path(run_dir) / "eval").glob("*.json"))
            raise FileNotFoundError(
                f"{str(run_dir)!r} has no evaluation {name!r} (run `ima evaluate {run_dir}`); "
                f"it has: {', '.join(have) or 'none'}"
            )
        result = EvaluationResult.load(path)
        metrics = read_metrics(run_dir)
        last = metrics[-1]["epoch"] if metrics else None
        if result.epoch is not None and last is not None and result.epoch != last:
            label = f"{label} (epoch {result.epoch} of {last})"
        out.append((label, result))
    return out


def unique_labels(run_dirs) -> list[str]:
    """The shortest trailing parts of the run folders' paths that tell them apart."""
    parts = [Path(d).resolve().parts for d in run_dirs]
    labels = []
    for i, own in enumerate(parts):
        for k in range(1, len(own) + 1):
            label = own[-k:]
            if all(other[-k:] != label for j, other in enumerate(parts) if j != i):
                break
        else:  # the same folder given twice: its path, numbered
            label = (str(Path(*own)), f"({parts[:i].count(own) + 1})")
            labels.append(" ".join(label))
            continue
        labels.append("/".join(label))
    return labels


def _fmt_eps(e: float) -> str:
    return f"{e:g}"


def robustness_table(
    results: list[tuple[str, EvaluationResult]], metric: str = "accuracy", *, ci: bool = False
) -> Table:
    """``metric`` (%) of each labelled result at every noise level any of them has.

    metric: ``"accuracy"`` (with the AUC column), or for segmentation results ``"tvdi"``
    or ``"adi"`` (the paper's Tables 10-15). ci: accuracy cells read ``acc [lo, hi]``, the
    Wilson 95 % interval (:meth:`EvaluationResult.intervals`).
    """
    check_choice("metric", metric, tuple(METRICS))
    if not results:
        raise ValueError("robustness_table needs at least one result")
    levels = sorted({e for _, r in results for e in r.eps})
    aucs, auc_note = _comparable_aucs(results)
    rows = []
    for (label, r), row_auc in zip(results, aucs, strict=True):
        values = getattr(r, metric)
        if values is None:
            raise ValueError(
                f"result {label!r} has no {metric!r} (only segmentation results have "
                "TVDI and ADI)"
            )
        by_eps = dict(zip(r.eps, values, strict=True))
        cells = [f"{100 * by_eps[e]:.2f}" if e in by_eps else "" for e in levels]
        if ci and metric == "accuracy":
            bounds = dict(zip(r.eps, r.intervals(), strict=True))
            cells = [
                f"{cell} [{100 * bounds[e][0]:.1f}, {100 * bounds[e][1]:.1f}]" if cell else ""
                for cell, e in zip(cells, levels, strict=True)
            ]
        auc_cell = "" if row_auc is None else f"{row_auc:.4f}"
        rows.append([label, *cells] + ([auc_cell] if metric == "accuracy" else []))
    first = results[0][1]
    norms = sorted({r.norm for _, r in results})
    subsets = sorted({r.subset or f"all {r.n_samples}" for _, r in results})
    title = (
        f"{METRICS[metric]} (%) under {_attack_names(results)}, "
        f"{'/'.join(n.upper() for n in norms)} norm, split {first.split}, samples: "
        f"{'; '.join(subsets)}" + (", [Wilson 95 % interval]" if ci and metric == "accuracy"
                                   else "")
        + (f"; {auc_note}" if auc_note and metric == "accuracy" else "")
        + _rms_note(results, levels)
    )
    auc_column = ["AUC"] if metric == "accuracy" else []
    return Table(title, ["Noise", *map(_fmt_eps, levels), *auc_column], rows)


def _rms_note(results, levels) -> str:
    """For L2 results of one input size, each level as its per-value RMS
    (``eps / sqrt(D)``, ``D`` input values per sample); else nothing."""
    sizes = {r.input_values for _, r in results}
    if {r.norm for _, r in results} != {"l2"} or len(sizes) != 1 or None in sizes:
        return ""
    (size,) = sizes
    return (f"; per-value RMS of each level (eps / sqrt({size})): "
            + ", ".join(f"{e / math.sqrt(size):.3g}" for e in levels))


def _comparable_aucs(results) -> tuple[list, str]:
    """Each row's AUC, comparable across rows: the stored AUC when every result has the
    same levels, else the AUC over the levels all results share (None where they share
    fewer than two), with a note for the table's title."""
    from ..evaluation import auc

    if len({tuple(r.eps) for _, r in results}) == 1:
        return [r.auc for _, r in results], ""
    common = sorted(set.intersection(*(set(r.eps) for _, r in results)))
    if len(common) < 2:
        return ([None] * len(results),
                "no AUC: the results share fewer than two noise levels")
    out = []
    for _, r in results:
        by_eps = dict(zip(r.eps, r.accuracy, strict=True))
        out.append(auc(common, [by_eps[e] for e in common]))
    levels = ", ".join(map(_fmt_eps, common))
    return out, f"AUC over the levels all rows share ({levels}), as their levels differ"


def clinical_table(label: str, result: EvaluationResult) -> Table:
    """One result's accuracy per class (by name), and sensitivity and specificity for a
    binary model (the positive class named), at every noise level, as ``acc [lo, hi]``
    (%, Wilson 95 % intervals)."""
    def cells(values, intervals):
        return [f"{100 * v:.2f} [{100 * lo:.1f}, {100 * hi:.1f}]"
                for v, (lo, hi) in zip(values, intervals, strict=True)]

    rows = [[f"all (n={result.n_samples})", *cells(result.accuracy, result.intervals())]]
    for c, values in (result.per_class_accuracy or {}).items():
        count = (result.class_counts or {}).get(c, "?")
        rows.append([f"{result.class_name(c)} (n={count})",
                     *cells(values, result.per_class_accuracy_ci[c])])
    positive = _positive(result)
    if result.sensitivity is not None:
        rows.append([f"sensitivity ({positive} positive)",
                     *cells(result.sensitivity, result.sensitivity_ci)])
    if result.specificity is not None:
        negative = result.class_name(1 - result.positive_class)
        rows.append([f"specificity ({negative} negative)",
                     *cells(result.specificity, result.specificity_ci)])
    title = (f"{label}: accuracy (%) [Wilson 95 % interval] under "
             f"{_attack_names([(label, result)])}, {result.norm.upper()} norm, "
             f"split {result.split}" + (f"; positive class: {positive}" if positive else ""))
    return Table(title, ["Noise", *map(_fmt_eps, result.eps)], rows)


def _positive(result: EvaluationResult) -> str | None:
    """The positive class's name as tables show it; None where there is none."""
    if result.positive_class is None:
        return None
    return result.class_name(result.positive_class)


def confusion_tables(label: str, result: EvaluationResult) -> list[Table]:
    """One result's confusion matrix at each noise level: rows the true class, columns
    the predicted class of the attacked point (see :class:`EvaluationResult`), classes by
    name; with more than two classes a last column counts the fooled samples whose
    class under attack the attacks do not record. Empty for results without them."""
    if result.confusion is None:
        return []
    k = len(result.confusion[0])
    names = [result.class_name(c) for c in range(k)]
    unrecorded = result.confusion_unrecorded
    header = ["true \\ predicted", *names] + (["fooled (class not recorded)"]
                                               if unrecorded is not None else [])
    tables = []
    for i, (e, matrix) in enumerate(zip(result.eps, result.confusion, strict=True)):
        rows = [[names[t], *map(str, matrix[t])]
                + ([str(unrecorded[i][t])] if unrecorded is not None else [])
                for t in range(k)]
        where = "clean" if e == 0 else f"eps {_fmt_eps(e)}"
        tables.append(Table(
            f"{label}: confusion matrix, {where} ({_attack_names([(label, result)])}, "
            f"{result.norm.upper()} norm, split {result.split}; rows: true class, "
            f"columns: predicted class)", header, rows))
    return tables


def clinical_tables(results: list[tuple[str, EvaluationResult]]) -> list[Table]:
    """For each classification result, its clinical table and confusion matrices; nothing
    for segmentation results (their numbers are the TVDI and ADI)."""
    out = []
    for label, result in results:
        if result.per_class_accuracy:
            out.append(clinical_table(label, result))
            out += confusion_tables(label, result)
    return out


def report_tables(results: list[tuple[str, EvaluationResult]], metric: str = "accuracy", *,
                  ci: bool = False) -> list[Table]:
    """What ``ima report`` shows: the robustness table (:func:`robustness_table`), then
    the clinical tables and confusion matrices of each classification result."""
    return [robustness_table(results, metric, ci=ci), *clinical_tables(results)]


def _attack_names(results) -> str:
    """``100-PGD``, ``100-step SPSA``, ``uniform noise (10 draws)``...: a table's attacks."""
    from ..evaluation import EVALUATION_ATTACKS

    names = []
    for _, r in results:
        attack = EVALUATION_ATTACKS.get(r.attack)
        name = attack.described(r.params) if attack is not None else r.attack
        if name not in names:
            names.append(name)
    return "/".join(names)
