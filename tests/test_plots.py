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


def test_noise_curves(runs, tmp_path, capsys):
    out = tmp_path / "noise.pdf"
    assert main(["plot", "noise", str(runs / "ima"), str(runs / "ce"), "--out", str(out)]) == 0
    _check_figure(tmp_path / "noise.png", out)
    ax = plots.plot_noise([runs / "ima"]).axes[0]
    assert "L2 norm" in ax.get_xlabel() and ax.get_ylabel() == "accuracy (%)"
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
    assert len(titles) == 4 and titles[0].startswith("pred ") and "eps=0.5" in titles[1]
    assert titles[0].endswith("clean")
    assert main(["plot", "samples", str(runs / "ima"), "--out", str(out)]) == 1
    assert "not images" in capsys.readouterr().err


def test_select_writes_the_tables(runs, capsys):
    run = runs / "ima"
    args = ["select", str(run), "--min-val-acc", "0.5", "--eps", "0,0.3", "--steps", "2",
            "--max-samples", "8", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "chosen: epoch 3" in out and "| epoch 3: eps_max = 3 x 0.1 = 0.3 (chosen)" in out
    assert "0 (Validation)" in out and "Best epoch" in out
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
