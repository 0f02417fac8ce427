"""The README's set-up commands and examples stay true."""

import pathlib
import re
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [b.strip() for b in _blocks("sh") if "pytest" in b]
    assert len(commands) == 1
    assert commands[0] in ci.splitlines()


def test_readme_first_commands_install_and_train():
    first = _blocks("sh")[0].strip()
    assert "pip install" in first and first.endswith("jaxderiv train")


def test_readme_python_examples_run(capsys):
    namespace = {}
    for block in _blocks("python"):
        exec(compile(textwrap.dedent(block), "README.md", "exec"), namespace)
    assert capsys.readouterr().out.split() == ["(4,", "3)", "(3,)", "True", "True"]
    assert namespace["hess"].shape == (4, 3, 4, 3)
