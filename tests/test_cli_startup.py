"""The command line answers help and argument errors without importing torch (issue 18:
`ima --help` took 4 s); the names it offers are the implementations' own."""

import subprocess
import sys

import pytest


def _torch_imported_after(code: str) -> bool:
    out = subprocess.run([sys.executable, "-c", f"import sys\n{code}\n"
                          "print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1] == "True"


@pytest.mark.parametrize("argv", [["--help"], ["evaluate", "--help"], ["train", "--help"],
                                  ["evaluate", "RUN", "--steps", "0"]])
def test_help_and_argument_errors_do_not_import_torch(argv):
    code = ("from ima.cli import main\n"
            "try:\n"
            f"    main({argv!r})\n"
            "except SystemExit:\n"
            "    pass")
    assert not _torch_imported_after(code)


def test_import_ima_is_light_and_its_names_resolve_on_use():
    assert not _torch_imported_after("import ima")
    assert _torch_imported_after("import ima\nima.evaluate")
    import ima

    for name in ima.__all__:
        assert getattr(ima, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        ima.nothing  # noqa: B018


def test_the_offered_names_are_the_implementations():
    from ima.attacks.autoattack import COMPONENTS, VERSIONS
    from ima.choices import AUTOATTACK_COMPONENTS, AUTOATTACK_VERSIONS, EVALUATION_ATTACK_NAMES
    from ima.evaluation.attacks import EVALUATION_ATTACKS

    assert tuple(EVALUATION_ATTACKS) == EVALUATION_ATTACK_NAMES
    assert COMPONENTS is AUTOATTACK_COMPONENTS and VERSIONS is AUTOATTACK_VERSIONS
