"""Reading YAML configs: scientific notation, duplicate keys, binary files, the top level."""

import pytest

from ima import config as cfg

BASE = """\
data:
  name: moons
model:
  name: moons_mlp
method:
  name: ce
"""


def write(tmp_path, text: str, name: str = "c.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_plain_scientific_notation_is_a_float_in_files_and_overrides(tmp_path):
    path = write(tmp_path, BASE + "optim:\n  lr: 1e-3\n  weight_decay: 3E-5\n"
                 "eval:\n  eps: [0, 5e-1, 1.5e0]\n")
    config = cfg.load_config(path)
    assert config["optim"]["lr"] == 1e-3 and isinstance(config["optim"]["lr"], float)
    assert config["optim"]["weight_decay"] == 3e-5
    assert config["eval"]["eps"] == [0.0, 0.5, 1.5]
    config = cfg.load_config(path, ["optim.lr=5E+2"])
    assert config["optim"]["lr"] == 500.0


@pytest.mark.parametrize("text, want", [
    ("1e-3", 1e-3), ("5E+2", 500.0), ("-2e4", -20000.0), ("+1e3", 1000.0), ("1.5e3", 1500.0),
    (".5e1", 5.0), ("1.0e-3", 1e-3), ("0.25", 0.25),
])
def test_parse_yaml_reads_scientific_notation_as_float(text, want):
    value = cfg.parse_yaml(text, "x")
    assert isinstance(value, float) and value == want


@pytest.mark.parametrize("text, want", [
    ("100", 100), ("-7", -7), ("1_000", "1_000"), ("1e", "1e"), ("e5", "e5"), ("1e-", "1e-"),
    ("1e3x", "1e3x"), ('"1e-3"', "1e-3"), ("'2e4'", "2e4"), ("abc", "abc"),
])
def test_parse_yaml_keeps_ints_and_strings(text, want):
    value = cfg.parse_yaml(text, "x")
    assert type(value) is type(want) and value == want


@pytest.mark.parametrize("text, key, line", [
    (BASE + "optim:\n  lr: 0.1\n  lr: 0.2\n", "lr", 9),  # nested
    (BASE + "model:\n  name: other\n", "model", 7),  # a whole section twice
    (BASE + "optim:\n  name: sgd\n  milestones: {a: 1, a: 2}\n", "a", 9),  # flow mapping
    ("data:\n  name: moons\n  extra:\n    deep:\n      k: 1\n      k: 2\n", "k", 6),
])
def test_duplicate_keys_are_errors_naming_key_file_and_line(tmp_path, text, key, line):
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as info:
        cfg.load_config(path)
    message = str(info.value)
    assert f"duplicate key {key!r}" in message
    assert str(path) in message and f"line {line}" in message


def test_merge_keys_may_override_merged_values():
    text = "base: &b {lr: 1}\noptim:\n  <<: *b\n  lr: 2\n"
    assert cfg.parse_yaml(text, "x")["optim"] == {"lr": 2}


def test_duplicate_key_in_a_set_value_names_the_override():
    with pytest.raises(ValueError, match=r"--set .*duplicate key 'k' at line 1"):
        cfg.apply_overrides({}, ["model.options={k: 1, k: 2}"])


def test_invalid_yaml_in_a_set_value_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match=r"--set 'eval.eps=\[1,' is not valid YAML"):
        cfg.apply_overrides({}, ["eval.eps=[1,"])


def test_empty_set_value_still_sets_none():
    raw = cfg.apply_overrides({"train": {"threads": 2}}, ["train.threads=", "optim.lr=1e-2"])
    assert raw == {"train": {"threads": None}, "optim": {"lr": 0.01}}


@pytest.mark.parametrize("payload", [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe",  # binary, not UTF-8
    "data:\n  name: caf\xe9\n".encode("latin-1"),  # text in another encoding
    b"data:\n  name: moons\x00\x00\n",  # valid UTF-8 but binary
])
def test_binary_or_non_utf8_file_is_a_one_line_value_error(tmp_path, payload):
    path = tmp_path / "c.yaml"
    path.write_bytes(payload)
    with pytest.raises(ValueError) as info:
        cfg.load_config(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert "UTF-8" in message or "binary" in message


def test_utf8_with_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert cfg.load_config(path)["data"]["name"] == "moons"


@pytest.mark.parametrize("text", ["- data\n- model\n", "42\n", "just words\n", "[1, 2]\n"])
@pytest.mark.parametrize("overrides", [(), ("optim.lr=0.1",)])
def test_top_level_must_be_a_mapping_of_sections(tmp_path, text, overrides):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match="must be a mapping of sections") as info:
        cfg.load_config(path, overrides)
    assert str(path) in str(info.value)


def test_apply_overrides_refuses_a_non_mapping_config_or_section():
    with pytest.raises(ValueError, match="must be a mapping of sections"):
        cfg.apply_overrides(["data"], ["optim.lr=0.1"])
    with pytest.raises(ValueError, match="section 'optim' must be a mapping"):
        cfg.apply_overrides({"optim": [1, 2]}, ["optim.lr=0.1"])
    assert cfg.apply_overrides({"optim": None}, ["optim.lr=0.1"]) == {"optim": {"lr": 0.1}}


def test_empty_file_is_an_empty_config(tmp_path):
    assert cfg.parse_config_text("", "c.yaml") == {}
    with pytest.raises(ValueError, match="data.name is required"):
        cfg.load_config(write(tmp_path, "# nothing yet\n"))


def test_run_folder_config_is_read_with_the_same_loader(tmp_path):
    from ima.runs import read_config

    (tmp_path / "config.yaml").write_text(BASE + "optim:\n  lr: 1e-3\n")
    assert read_config(tmp_path)["optim"]["lr"] == 1e-3
    (tmp_path / "config.yaml").write_text(BASE + "optim:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(ValueError, match=r"duplicate key 'lr' at line 9"):
        read_config(tmp_path)


@pytest.mark.parametrize(("text", "value"), [
    ("010", 10), ("0o10", 8), ("0x1F", 31), ("1:20", "1:20"), ("0b11", "0b11"),
    ("yes", "yes"), ("on", "on"), ("true", True), ("False", False),
])
def test_numbers_and_booleans_follow_yaml_1_2(text, value):
    """YAML 1.1 (PyYAML's default) reads 010 as 8, 1:20 as 80 and yes as true."""
    assert cfg.parse_yaml(f"a: {text}", "test") == {"a": value}


def test_a_yaml_1_1_boolean_word_is_refused_where_a_boolean_is_needed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {name: moons}\nmodel: {name: moons_mlp}\ntrain: {compile: yes}\n")
    with pytest.raises(TypeError, match="train.compile must be true or false"):
        cfg.load_config(path)
