"""Registry: registration, lookup, user factories "package.module:function"."""

import collections

import pytest

from ima.registry import Registry, import_object


def _registry():
    reg = Registry("widget")

    @reg.register("double")
    def double(*, value=1):
        return 2 * value

    reg.register("triple")(lambda *, value=1: 3 * value)
    return reg


def test_register_get_build_names():
    reg = _registry()
    assert reg.names() == ["double", "triple"]
    assert "double" in reg and "nope" not in reg
    assert reg.get("double")(value=4) == 8
    assert reg.build("triple", value=2) == 6


def test_register_returns_the_factory_unchanged():
    reg = Registry("widget")

    def f():
        return 1

    assert reg.register("f")(f) is f


def test_unknown_name_lists_known_names():
    reg = _registry()
    with pytest.raises(ValueError, match=r"unknown widget 'quad'.*'double', 'triple'"):
        reg.get("quad")


def test_duplicate_and_bad_names_rejected():
    reg = _registry()
    with pytest.raises(ValueError, match="already registered"):
        reg.register("double")
    with pytest.raises(ValueError, match="must not contain ':'"):
        reg.register("a:b")
    with pytest.raises(ValueError, match="non-empty"):
        reg.register("")
    with pytest.raises(TypeError, match="callable"):
        reg.register("x")(42)
    with pytest.raises(TypeError, match="string"):
        reg.get(3)


def test_user_factory_from_standard_library():
    reg = Registry("widget")
    factory = reg.get("collections:OrderedDict")
    assert factory is collections.OrderedDict
    assert reg.build("collections:Counter", a=2) == collections.Counter(a=2)


def test_user_factory_from_a_user_module(tmp_path, monkeypatch):
    (tmp_path / "ima_test_user_factories.py").write_text(
        "def make(*, n=1):\n    return ['made'] * n\n\nclass Box:\n    @staticmethod\n"
        "    def create():\n        return 'box'\n\nNOT_CALLABLE = 5\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("widget")
    assert reg.build("ima_test_user_factories:make", n=2) == ["made", "made"]
    assert reg.build("ima_test_user_factories:Box.create") == "box"
    with pytest.raises(ValueError, match=r"'ima_test_user_factories:NOT_CALLABLE' is not callable"):
        reg.get("ima_test_user_factories:NOT_CALLABLE")


def test_user_factory_errors_name_the_string():
    reg = Registry("widget")
    with pytest.raises(ValueError, match=r"cannot import module 'no_such_pkg_xyz\.mod'.*:fn'"):
        reg.get("no_such_pkg_xyz.mod:fn")
    with pytest.raises(ValueError, match=r"no attribute 'no_such_fn'.*'collections:no_such_fn'"):
        reg.get("collections:no_such_fn")
    with pytest.raises(ValueError, match="not callable"):
        reg.get("math:pi")


@pytest.mark.parametrize("spec", ["collections:", ":OrderedDict", "a:b:c", ".rel:fn", "nocolon"])
def test_import_object_rejects_malformed_specs(spec):
    with pytest.raises(ValueError, match="package.module:function"):
        import_object(spec)


def test_import_object_returns_any_object():
    import math

    assert import_object("math:pi") == math.pi
    with pytest.raises(TypeError):
        import_object(None)
