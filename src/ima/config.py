"""Experiment configs: YAML with sections data, model, method, optim, train, eval.

``resolve_config`` fills every default and derived value (such as IMA's ``delta_eps``)
and rejects unknown keys, so the ``config.yaml`` written into a run folder says exactly
what ran. ``data``, ``model`` and ``method`` take ``name`` plus the keyword arguments of
the named factory or method; the other sections have fixed keys (``DEFAULTS``).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any

import yaml

from .acceleration import PRECISIONS
from .data import DATASETS
from .data.dataset import check_class_names
from .lp import check_norm
from .methods import METHODS
from .models import MODELS
from .validation import check_choice, check_int, check_real

__all__ = [
    "DEFAULTS",
    "apply_overrides",
    "load_config",
    "read_config_file",
    "method_hyperparameters",
    "parse_config_text",
    "parse_yaml",
    "resolve_config",
    "save_config",
]

SECTIONS = ("data", "model", "method", "optim", "train", "eval")

#: Keys of each section that are not passed on to a factory, with their defaults.
DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {"name": None, "batch_size": 128, "eval_batch_size": 512, "num_workers": 0,
             "class_names": None},
    "model": {"name": None},
    "method": {"name": "ce"},
    "optim": {
        "name": "adam",
        "lr": 1e-3,
        "weight_decay": 0.0,
        "momentum": 0.9,
        "nesterov": False,
        "schedule": "none",
        "milestones": [],
        "gamma": 0.1,
        "min_lr": 0.0,
    },
    "train": {
        "epochs": 30,
        "seed": 0,
        "save_every": 10,
        "threads": None,
        "device": "auto",
        "val_split": "val",
        "iterations_per_epoch": None,
        "precision": "fp32",
        "channels_last": False,
        "compile": False,
    },
    "eval": {
        "attack": "pgd",
        "norm": "l2",
        "eps": [0.0],
        "steps": 100,
        "split": "test",
        "max_samples": None,
        "positive_class": None,
        "precision": "fp32",
        "channels_last": False,
        "compile": False,
    },
}

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("none", "step", "cosine", "poly")


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader with two fixes for hand-written configs.

    * Booleans and numbers follow YAML 1.2's core schema: plain scientific notation is a
      float (``1e-3``, ``5E+2``; YAML 1.1 wants ``1.0e-3``), ``010`` is ten (not octal
      8), ``1:20``, ``1_0`` and ``0b11`` are strings, ``yes``/``on`` are strings (only
      ``true``/``false`` are booleans), ``0o17`` and ``0x1F`` are octal and hexadecimal.
    * A key given twice in one mapping, at any depth, is an error (PyYAML keeps the last
      one silently, so a forgotten earlier line would win or lose unseen).
    """

    #: what errors call the text being read (set per parse)
    source = "YAML text"

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # "<<: *base" may override keys of the merged mapping
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # unhashable key: the base constructor reports it
                if first is not None:
                    raise ValueError(
                        f"{self.source}: duplicate key {key!r} at line {line} (first given at "
                        f"line {first}); give each key once"
                    )
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


# YAML 1.2's core schema for booleans and numbers in place of PyYAML's YAML 1.1 rules,
# which read 010 as 8 (octal), 1:20 as 80 (base 60), 1_0 as 10 and yes/on as true, while
# refusing 1e-3 as a float: a config value means what it reads as.
_TAG = "tag:yaml.org,2002:"
_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in (_TAG + "bool", _TAG + "int", _TAG + "float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(
    _TAG + "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_ConfigLoader.add_implicit_resolver(
    _TAG + "int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"))
_ConfigLoader.add_implicit_resolver(
    _TAG + "float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _core_int(loader, node) -> int:
    """A YAML 1.2 integer: decimal (leading zeros allowed), 0o octal or 0x hexadecimal."""
    text = loader.construct_scalar(node)
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text, 10)


_ConfigLoader.add_constructor(_TAG + "int", _core_int)


def _one_line(err: yaml.YAMLError) -> str:
    """A PyYAML error as one line: what is wrong and where (line and column, 1-based)."""
    if isinstance(err, yaml.MarkedYAMLError):
        what = "; ".join(str(p) for p in (err.context, err.problem) if p)
        mark = err.problem_mark or err.context_mark
        if mark is not None:
            what += f" (line {mark.line + 1}, column {mark.column + 1})"
        return what
    return " ".join(str(err).split())


def parse_yaml(text: str, source: str):
    """Parse YAML ``text`` as ima reads configs (see :class:`_ConfigLoader`).

    source: what the text is, for error messages (``"config file 'a.yaml'"``,
    ``"--set 'optim.lr=1e-3'"``). Raises ``ValueError`` naming it for binary text, invalid
    YAML and duplicate keys (with the line).
    """
    if "\x00" in text:
        raise ValueError(f"{source} is binary, not YAML text (it holds NUL bytes)")
    loader = _ConfigLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    except yaml.YAMLError as err:
        raise ValueError(f"{source} is not valid YAML: {_one_line(err)}") from err
    finally:
        loader.dispose()


def _kind(value) -> str:
    if isinstance(value, list | tuple):
        return "a list"
    return f"the {type(value).__name__} {value!r}"


def parse_config_text(text: str, source: str) -> dict:
    """The sections of a config file's ``text`` (``{}`` when it is empty).

    source: the file's path, named in errors. Raises ``ValueError`` for invalid YAML,
    duplicate keys, and a document that is not a mapping of sections (a list or a scalar).
    """
    where = f"config file {source!r}"
    raw = parse_yaml(text, where)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(
            f"{where} must be a mapping of sections ({', '.join(SECTIONS)}), got {_kind(raw)}"
        )
    return raw


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"config file {str(path)!r} is not UTF-8 text (a binary file, or another "
            f"encoding): byte 0x{data[err.start]:02x} at offset {err.start}"
        ) from None


def read_config_file(path) -> dict:
    """The sections of a YAML config file as written, unresolved (nothing imported)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    return parse_config_text(_read_text(path), str(path))


def load_config(path, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Read a YAML config file, apply ``section.key=value`` overrides and resolve it."""
    return resolve_config(apply_overrides(read_config_file(path), overrides))


def apply_overrides(raw: dict, overrides) -> dict:
    """Return a copy of ``raw`` with ``section.key=value`` strings applied.

    The value is YAML, read as config files are (:func:`parse_yaml`); an empty value
    sets None. ``raw`` None (an empty file) is an empty config.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(
            f"a config must be a mapping of sections ({', '.join(SECTIONS)}), got {_kind(raw)}"
        )
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ValueError(f"an override must look like section.key=value, got {item!r}")
        if section not in SECTIONS:
            raise ValueError(f"unknown config section {section!r} in {item!r}; known: {SECTIONS}")
        if raw.get(section) is None:
            raw[section] = {}
        elif not isinstance(raw[section], dict):
            raise ValueError(
                f"config section {section!r} must be a mapping, got {_kind(raw[section])}; "
                f"cannot apply {item!r}"
            )
        raw[section][name] = parse_yaml(value, f"--set {item!r}") if value.strip() else None
    return raw


def save_config(config: dict, path) -> None:
    """Write a resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config, sort_keys=False))


def _factory_kwargs(section: str, factory, given: dict) -> dict:
    """Check ``given`` against the factory's keyword parameters; return them with defaults."""
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = {
        n: p for n, p in params.items()
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and n != "split" and n not in DEFAULTS[section]  # (data.class_names: a section key)
    }
    unknown = sorted(set(given) - set(named))
    if unknown and not takes_any:
        raise ValueError(
            f"unknown key(s) {', '.join(section + '.' + k for k in unknown)}; "
            f"allowed: {', '.join(sorted(set(DEFAULTS[section]) | set(named)))}"
        )
    out = {n: p.default for n, p in named.items() if p.default is not inspect.Parameter.empty}
    out.update(given)
    return out


def _fixed(section: str, given: dict) -> dict:
    unknown = sorted(set(given) - set(DEFAULTS[section]))
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(section + '.' + k for k in unknown)}; "
            f"allowed: {', '.join(DEFAULTS[section])}"
        )
    return {**copy.deepcopy(DEFAULTS[section]), **given}


def _eps_list(value) -> list[float]:
    values = value if isinstance(value, list | tuple) else [value]
    return [check_real("eval.eps", v, low=0.0) for v in values]


def _named_section(s: str, registry, given: dict) -> dict:
    """A data or model section: its fixed keys with defaults, and the keyword arguments
    of the factory it names (checked against the factory's signature)."""
    given = dict(given)
    fixed_keys = {k: given.pop(k) for k in list(given) if k in DEFAULTS[s]}
    fixed = {**copy.deepcopy(DEFAULTS[s]), **fixed_keys}
    if not fixed["name"]:
        raise ValueError(f"{s}.name is required (known: {', '.join(registry.names())})")
    factory = registry.get(fixed["name"])
    return {**fixed, **_factory_kwargs(s, factory, given)}


def resolve_data(given) -> dict:
    """The ``data`` section alone, resolved and checked as :func:`resolve_config` does:
    for what needs only the data (``ima measure``), so no model code is imported."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise TypeError(f"config section 'data' must be a mapping, got {given!r}")
    data = _named_section("data", DATASETS, given)
    check_int("data.batch_size", data["batch_size"], low=1)
    check_int("data.eval_batch_size", data["eval_batch_size"], low=1)
    check_int("data.num_workers", data["num_workers"], low=0)
    names = check_class_names(data["class_names"], key="data.class_names")
    data["class_names"] = None if names is None else list(names)
    return data


def resolve_config(raw: dict) -> dict:
    """Validate a config dict and return it with every default and derived value filled."""
    if not isinstance(raw, dict):
        raise TypeError(f"a config must be a mapping of sections, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown config section(s) {', '.join(unknown)}; known: {SECTIONS}")
    sections = {}
    for s in SECTIONS:
        given = raw.get(s) or {}
        if not isinstance(given, dict):
            raise TypeError(f"config section {s!r} must be a mapping, got {given!r}")
        sections[s] = dict(given)

    train = _fixed("train", sections["train"])
    epochs = check_int("train.epochs", train["epochs"], low=1)
    check_int("train.seed", train["seed"], low=0)
    check_int("train.save_every", train["save_every"], low=1)
    if train["threads"] is not None:
        check_int("train.threads", train["threads"], low=1)
    check_choice("train.val_split", train["val_split"], ("val", "test", None))
    if train["iterations_per_epoch"] is not None:
        check_int("train.iterations_per_epoch", train["iterations_per_epoch"], low=1)

    _check_speed_options("train", train)

    optim = _fixed("optim", sections["optim"])
    check_choice("optim.name", optim["name"], OPTIMIZERS)
    check_real("optim.lr", optim["lr"], low=0.0, low_open=True)
    check_real("optim.weight_decay", optim["weight_decay"], low=0.0)
    check_real("optim.momentum", optim["momentum"], low=0.0, high=1.0, high_open=True)
    check_choice("optim.schedule", optim["schedule"], SCHEDULES)
    check_real("optim.gamma", optim["gamma"], low=0.0, low_open=True, high=1.0)
    optim["milestones"] = [check_int("optim.milestones", m, low=1) for m in optim["milestones"]]

    evals = _fixed("eval", sections["eval"])
    check_norm(evals["norm"])
    evals["eps"] = _eps_list(evals["eps"])
    if not evals["eps"]:
        raise ValueError("eval.eps must hold at least one noise level, got an empty list")
    from .evaluation.attacks import EVALUATION_ATTACKS  # here: evaluation imports config

    check_choice("eval.attack", evals["attack"], tuple(EVALUATION_ATTACKS))
    check_choice("eval.split", evals["split"], ("train", "val", "test"))
    check_int("eval.steps", evals["steps"], low=1)
    if evals["max_samples"] is not None:
        check_int("eval.max_samples", evals["max_samples"], low=1)
    _check_positive_class(evals["positive_class"])
    _check_speed_options("eval", evals)

    out = {"data": resolve_data(sections["data"]),
           "model": _named_section("model", MODELS, sections["model"])}

    method = sections["method"]
    name = method.pop("name", "ce")
    cls = METHODS.get(name)
    config = cls.make_config(epochs=epochs, **method)
    out["method"] = {"name": name, **_as_plain(config)}
    out["optim"], out["train"], out["eval"] = optim, train, evals
    return out


def _check_positive_class(value) -> None:
    """eval.positive_class: None (class 1 of two), a class name, or a label index."""
    if value is None or (isinstance(value, str) and value.strip()):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"eval.positive_class must be a class name (or, for data without class names, "
            f"a label index >= 0), got {value!r}"
        )


def _check_speed_options(section: str, values: dict) -> None:
    """precision, channels_last and compile (see :mod:`ima.acceleration`)."""
    check_choice(f"{section}.precision", values["precision"], tuple(PRECISIONS))
    for key in ("channels_last", "compile"):
        if not isinstance(values[key], bool):
            raise TypeError(f"{section}.{key} must be true or false, got {values[key]!r}")


def _as_plain(config) -> dict:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def method_hyperparameters(config: dict) -> dict:
    """The method section without its name: the keyword arguments of the method."""
    return {k: v for k, v in config["method"].items() if k != "name"}
