"""Figures, checkpoint selection, eps suggestion, HTML report and model export end to end
on tiny Moons and digits runs (the CLI, as a user calls it)."""

import base64
import importlib.util
import re

import pytest
import torch
import yaml
from PIL import Image

from ima.cli import main
from ima.evaluation import EvaluationResult
from ima.evaluation.examples import sample_images
from ima.exporting import ExportMismatch, MissingExtra, export_model
from ima.reporting import figures as plots

MOONS = {
    "data": {"name": "moons", "n_train": 256, "n_val": 64, "n_test": 64, "batch_size": 64},
    "model": {"name": "moons_mlp"},
    "method": {"name": "ima", "eps_max": 0.3},
    "optim": {"lr": 0.01},
    "train": {"epochs": 3, "threads": 1, "save_every": 1},
    "eval": {"eps": [0.0, 0.1, 0.3], "steps": 5},
}
DIGITS = {
    "data": {"name": "digits", "batch_size": 256},
    "model": {"name": "digits_cnn", "width": 4},
    "method": {"name": "ima", "eps_max": 1.0, "steps": 3, "n_binary": 2},
    "optim": {"lr": 0.01},
    "train": {"epochs": 1, "threads": 1},
    "eval": {"eps": [0.0, 0.5, 1.0], "steps": 5},
}


def _result(eps, accuracy, n=64):
    return EvaluationResult(
        attack="pgd", norm="l2", split="test", n_samples=n, subset=None, seed=0,
        params={"steps": 100}, eps=eps, accuracy=accuracy,
        accuracy_per_loss={"ce": accuracy, "margin": accuracy}, auc=0.7,
        robust=[[True] * n for _ in eps],
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("plots")
    configs = {
        "ima": MOONS,
        "ce": {**MOONS, "method": {"name": "ce"}, "train": {**MOONS["train"], "epochs": 2}},
        "digits": DIGITS,
    }
    for name, config in configs.items():
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        assert main(["train", "--config", str(path), "--out", str(root / name),
                     "--no-progress"]) == 0
    # Plots only read results: hand-written ones keep these tests off the attack code.
    _result([0.0, 0.1, 0.3], [0.95, 0.9, 0.7]).save(root / "ima" / "eval" / "pgd-l2-test.json")
    _result([0.0, 0.1, 0.3], [0.97, 0.6, 0.1]).save(root / "ce" / "eval" / "pgd-l2-test.json")
    return root


def _check_figure(png, pdf=None):
    """A non-empty PNG of the figure size plots.py promises (and its PDF)."""
    assert png.is_file() and png.stat().st_size > 5000
    with Image.open(png) as image:
        image.load()
        width, height = image.size
    assert width >= 300 and height >= 200
    pdf = pdf or png.with_suffix(".pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    return width, height


def test_boundary_figure_and_bayes_distance(runs, tmp_path, capsys):
    out = tmp_path / "fig" / "boundary.png"
    assert main(["plot", "boundary", str(runs / "ima"), str(runs / "ce"), "--out", str(out),
                 "--resolution", "80"]) == 0
    text = capsys.readouterr().out
    distances = [float(v) for v in re.findall(r"mean distance to the Bayes boundary ([0-9.]+)",
                                              text)]
    assert len(distances) == 2 and all(0 <= d < 1.0 for d in distances)
    assert "disagreement" in text
    _check_figure(out)

    fig, comparisons = plots.plot_boundaries([runs / "ima"], resolution=60)
    width, height = fig.get_size_inches() * plots.DPI
    path = plots.save_figure(fig, tmp_path / "one")[0]
    with Image.open(path) as image:
        assert image.size == (round(width), round(height))
    c = comparisons[0]
    assert 0 <= c.disagreement < 0.5 and c.mean_distance <= c.hausdorff
    assert "mean distance to Bayes boundary" in fig.axes[0].get_title()

    assert main(["plot", "boundary", str(runs / "digits"), "--out", str(tmp_path / "x")]) == 1
    assert "2-D inputs only" in capsys.readouterr().err


def test_margin_histograms(runs, tmp_path, monkeypatch, capsys):
    # several runs and no --out: NAME.png in the current folder
    monkeypatch.chdir(tmp_path)
    assert main(["plot", "margins", str(runs / "ima"), str(runs / "digits")]) == 0
    assert "wrote margins.png" in capsys.readouterr().out
    _check_figure(tmp_path / "margins.png")
    out = tmp_path / "m.png"
    assert main(["plot", "margins", str(runs / "ima"), "--overlay", "--out", str(out)]) == 0
    _check_figure(out)
    fig = plots.plot_margins([runs / "ima"])
    labels = [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]
    assert any("eps_max = 0.3" in t for t in labels)
    assert main(["plot", "margins", str(runs / "ce"), "--out", str(out)]) == 1
    assert "keeps no per-sample margins" in capsys.readouterr().err


def test_training_curves_default_into_the_run_folder(runs, capsys):
    assert main(["plot", "curves", str(runs / "ima")]) == 0
    png = runs / "ima" / "figures" / "curves.png"
    assert f"wrote {png}" in capsys.readouterr().out
    _check_figure(png)
    fig = plots.plot_curves(runs / "ima")
    assert len(fig.axes) == 2  # accuracy and margins
    assert fig.axes[0].get_ylabel() == "accuracy on clean data (%)"
    assert len(plots.plot_curves([runs / "ce"]).axes) == 1  # ce records no margins


def _legend(ax):
    """(label, line style, marker, marker face colour) of each legend entry of ``ax``."""
    legend = ax.get_legend()
    return [(text.get_text(), line.get_linestyle(), line.get_marker(),
             line.get_markerfacecolor())
            for text, line in zip(legend.get_texts(), legend.get_lines(), strict=True)]


def test_training_curves_tell_train_and_val_apart(runs):
    entries = _legend(plots.plot_curves([runs / "ima", runs / "ce"]).axes[0])
    assert [e[0] for e in entries] == ["ima: train", "ima: val", "ce: train", "ce: val"]
    train, val = entries[:2]
    # solid against dashed, and a filled against a hollow marker of another shape: the
    # two are told apart in the legend even where the dashes are too short to see
    assert (train[1], val[1]) == ("-", "--")
    assert train[2] != val[2] and val[3] == "white" != train[3]
    assert len(set(entries)) == len(entries)


def test_training_curves_note_lines_that_hide_one_another(runs, tmp_path):
    import csv
    import shutil

    run = tmp_path / "same"
    shutil.copytree(runs / "ce", run)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    for row in rows:
        row["val_acc"] = row["train_acc"]
    with (run / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    title = plots.plot_curves([run]).axes[0].get_legend().get_title().get_text()
    assert " ".join(title.split()) == "same: train and same: val coincide (identical values)"
    assert plots.plot_curves([runs / "ce"]).axes[0].get_legend().get_title().get_text() == ""


def test_training_curves_legend_note_fits_the_axes(runs, tmp_path):
    """IMA's max margin and its largest reachable margin coincide once both reach eps_max:
    the note saying so is wrapped, so the legend stays inside its axes (it used to run
    past the figure's right edge for a run named like ``fmnist-reduced-ima-e20``)."""
    import shutil

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    run = tmp_path / "a-run-with-a-longer-name-e20"
    shutil.copytree(runs / "ima", run)
    fig = plots.plot_curves([run])
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    margin_ax = fig.axes[1]
    legend = margin_ax.get_legend()
    assert "coincide" in legend.get_title().get_text()
    assert legend.get_window_extent(renderer).width <= margin_ax.get_window_extent(renderer).width


def test_noise_curves(runs, tmp_path, capsys):
    out = tmp_path / "noise.pdf"
    assert main(["plot", "noise", str(runs / "ima"), str(runs / "ce"), "--out", str(out)]) == 0
    _check_figure(tmp_path / "noise.png", out)
    ax = plots.plot_noise([runs / "ima"]).axes[0]
    assert "L2 norm" in ax.get_xlabel() and ax.get_ylabel() == "accuracy (%)"
    # L2 levels also as per-pixel RMS: Moons points have 2 values, eps 0.3 is 0.212
    (top,) = ax.child_axes
    assert top.get_xlabel().startswith("per-pixel RMS of the perturbation (eps / sqrt(2)")
    assert [t.get_text() for t in top.get_xticklabels()] == ["0", "0.0707", "0.212"]
    # a result that says how many input values its samples have is taken at its word
    result = _result([0.0, 1.0], [0.9, 0.5])
    result.input_values = 64
    ax = plots.plot_noise(None, results=[("x", result)]).axes[0]
    assert [t.get_text() for t in ax.child_axes[0].get_xticklabels()] == ["0", "0.125"]
    assert main(["plot", "noise", str(runs / "digits"), "--out", str(out)]) == 1
    assert "has no evaluation" in capsys.readouterr().err


def test_sample_grid(runs, tmp_path, capsys):
    out = tmp_path / "samples.png"
    assert main(["plot", "samples", str(runs / "digits"), "--eps", "0.5,2", "--n", "2",
                 "--steps", "3", "--out", str(out)]) == 0
    w, h = _check_figure(out)
    from ima import load_run

    fig = plots.plot_samples(sample_images(load_run(runs / "digits"), eps=[0.5], n=2,
                                           steps=2))
    titles = [ax.get_title() for ax in fig.axes]
    # per image: clean, adversarial, its perturbation amplified (8x8 digits: 64 values)
    assert len(titles) == 6 and titles[0].startswith("pred ") and titles[0].endswith("clean")
    assert "eps=0.5\n(RMS 0.0625 per pixel)" in titles[1]
    assert re.fullmatch(r"perturbation x\d+", titles[2])
    assert not any("eps=0" in t and "eps=0." not in t for t in titles)
    assert main(["plot", "samples", str(runs / "ima"), "--out", str(out)]) == 1
    assert "not images" in capsys.readouterr().err


def test_samples_are_taken_in_turns_from_each_class(tmp_path, monkeypatch, capsys):
    """Data sorted by class: the figure shows one image of each class in turn, not the
    first images of the file (all of class 0)."""
    import ima
    from ima.analysis import samples_by_class
    from user_code import trained, write_user_module

    monkeypatch.syspath_prepend(str(tmp_path))
    module = write_user_module(tmp_path, "plots_user_code")
    config = {"data": {"name": "plots_user_code:bars"},
              "model": {"name": "plots_user_code:small_cnn"},
              "eval": {"eps": [0.0, 0.5], "steps": 2}}
    run = ima.import_model(config, model=trained(module), out=tmp_path / "run")
    assert sample_images(run, n=6, steps=2).truth.tolist() == [0] * 6  # file order
    samples = samples_by_class(run, n=6, steps=2)
    assert samples.truth.tolist() == [0, 1, 2, 0, 1, 2]
    fig = plots.plot_samples(samples)
    assert [ax.get_ylabel() for ax in fig.axes[::3]] == [f"true {c}" for c in
                                                         (0, 1, 2, 0, 1, 2)]
    named = plots.plot_samples(samples, class_names=["low", "mid", "high"])
    assert [ax.get_ylabel() for ax in named.axes[::3]][:3] == ["true low", "true mid",
                                                               "true high"]
    title = named.axes[0].get_title()
    assert "pred 0" not in title and any(f"pred {n}," in title for n in ("low", "mid", "high"))
    # the command line shows the same images
    shown = []
    real = plots.plot_samples
    monkeypatch.setattr(plots, "plot_samples",
                        lambda s, **kw: shown.append(s.truth.tolist()) or real(s, **kw))
    monkeypatch.setenv("IMA_TRUST_CODE", "1")
    assert main(["plot", "samples", str(run.dir), "--n", "4", "--steps", "2"]) == 0
    assert shown == [[0, 1, 2, 0]]


def test_select_with_one_checkpoint_says_so(runs, tmp_path, capsys):
    import shutil

    run = tmp_path / "short"
    shutil.copytree(runs / "ce", run)
    (run / "checkpoints" / "epoch-001.pt").unlink()  # as save_every 10 leaves 2 epochs
    before = sorted(p.name for p in run.rglob("*"))
    assert main(["select", str(run), "--min-val-acc", "0.5", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "has one saved checkpoint (epoch 2); select chooses among two or more" in err
    assert "train.save_every" in err
    assert sorted(p.name for p in run.rglob("*")) == before  # nothing evaluated


def test_select_writes_the_tables(runs, capsys):
    run = runs / "ima"
    args = ["select", str(run), "--min-val-acc", "0.5", "--eps", "0,0.3", "--steps", "2",
            "--max-samples", "8", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "chosen: epoch 3" in out and "| epoch 3: eps_max = 3 x 0.1 = 0.3 (chosen)" in out
    assert "0 (Validation)" in out and "Best epoch" in out
    # one unit throughout: percent, in both tables and in the verdict
    assert "Accuracy (%) per checkpoint" in out and re.search(r"accuracy \d+\.\d\d% >= "
                                                              r"50\.00%", out)
    cells = [c.strip() for line in out.splitlines() if line.startswith("| noise=")
             for c in line.split("|")[2:-2]]
    assert cells and all(re.fullmatch(r"\d{1,3}\.\d\d", c) for c in cells)
    md = (run / "eval" / "select-test.md").read_text()
    assert "chosen: epoch 3" in md
    rows = (run / "eval" / "select-test.csv").read_text().splitlines()
    assert rows[0] == "Noise,0,0.3,0 (Validation)" and len(rows) == 4
    assert (run / "eval" / "select-test-epochs.csv").is_file()
    saved = sorted(p.name for p in (run / "eval").glob("*-epoch-*.json"))
    assert saved == [f"pgd-l2-test-epoch-00{e}.json" for e in (1, 2, 3)]
    # same settings: results are read back, not recomputed
    stamps = {p: p.stat().st_mtime_ns for p in (run / "eval").glob("*-epoch-*.json")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    assert main(["select", str(run), "--min-val-acc", "1.0", "--eps", "0,0.3", "--steps",
                 "2", "--max-samples", "8", "--no-progress"]) == 1
    assert "none chosen: no checkpoint reaches" in capsys.readouterr().out


def test_suggest_eps(runs, capsys):
    assert main(["suggest-eps", str(runs / "ima"), "--quantile", "0.3"]) == 0
    out = capsys.readouterr().out
    value = float(re.search(r"training: ([0-9.e-]+) \(the 0.3 quantile", out).group(1))
    from ima import load_run

    margins = load_run(runs / "ima").method.margins.margins
    assert value == pytest.approx(float(torch.quantile(margins.double(), 0.3)), rel=1e-5)
    assert main(["suggest-eps", str(runs / "ce")]) == 1
    assert "keeps no per-sample margins" in capsys.readouterr().err


def test_html_report(runs, tmp_path, capsys):
    page = tmp_path / "report" / "index.html"
    assert main(["report", str(runs / "ima"), str(runs / "ce"), "--html", str(page)]) == 0
    html = page.read_text()
    assert "<table>" in html and "<th>Noise</th>" in html and "<td>95.00</td>" in html
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 4  # noise, curves, margins, boundaries
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "src=\"http" not in html and "<link" not in html  # self-contained


def test_export_torchscript_round_trip(runs, tmp_path, capsys):
    assert main(["export", str(runs / "digits")]) == 0
    out = capsys.readouterr().out
    path = runs / "digits" / "export" / "model-epoch-001.pt"
    assert path.is_file() and "max abs diff" in out
    import warnings

    from ima import load_run

    model = load_run(runs / "digits").model
    x = torch.rand(5, 1, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated
        loaded = torch.jit.load(str(path))
    torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=1e-5)

    result = export_model(runs / "ima", format="export", path=tmp_path / "m.pt2")
    assert result.max_abs_diff <= result.tolerance and result.input_shape == (2,)
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    x = torch.randn(3, 2)
    torch.testing.assert_close(program(x), load_run(runs / "ima").model(x))


def test_export_mismatch_fails_loudly(runs, tmp_path, monkeypatch):
    from ima import exporting as deployment

    def broken(model, example, path):
        path_ = str(path)
        with open(path_, "wb") as f:
            f.write(b"x")
        return (lambda x: model(x) + 1e-2), "test"

    monkeypatch.setitem(deployment._WRITERS, "torchscript", broken)
    target = tmp_path / "bad.pt"
    with pytest.raises(ExportMismatch, match="differs from the original"):
        export_model(runs / "ima", path=target)
    assert not target.exists() and not list(tmp_path.iterdir())


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None
                    or importlib.util.find_spec("onnx") is None,
                    reason="ONNX export needs the optional extra ima[onnx]")
def test_export_onnx_round_trip(runs, tmp_path):
    result = export_model(runs / "digits", format="onnx", path=tmp_path / "m.onnx")
    assert result.path.is_file() and result.max_abs_diff <= result.tolerance


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is not None
                    and importlib.util.find_spec("onnx") is not None,
                    reason="the ONNX packages are installed")
def test_export_onnx_without_the_extra(runs, tmp_path, capsys):
    with pytest.raises(MissingExtra, match=r"pip install 'ima\[onnx\]'"):
        export_model(runs / "ima", format="onnx", path=tmp_path / "m.onnx")
    assert main(["export", str(runs / "ima"), "--format", "onnx"]) == 1
    assert "ima[onnx]" in capsys.readouterr().err


def test_figure_and_report_code_runs_no_attack_and_imports_no_circle():
    """Figures read results and arrays: the reporting package imports no attack, and
    tables, figures, the HTML page and the analyses import one another one way only."""
    import ast
    from pathlib import Path

    import ima

    root = Path(ima.__file__).parent
    for path in (root / "reporting").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {node.module or "" for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom)}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                     for alias in node.names}
        assert not any("attacks" in m or m.endswith("examples") or m == "segmentation"
                       for m in imported), (path.name, imported)
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                 for alias in node.names}
        assert not names & {"pgd", "bpgd", "spsa", "ddn", "segment_under_attack"}, path.name
    for path in (root / "analysis").glob("*.py"):
        text = path.read_text()
        assert "reporting.figures" not in text and "reporting.html" not in text, path.name
    tables = (root / "reporting" / "tables.py").read_text()
    assert "figures" not in tables and "analysis" not in tables
