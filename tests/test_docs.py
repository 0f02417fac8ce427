"""The derivation pages stay in step with the code and render as Markdown math."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md"))
OP_PAGES = [
    p for p in PAGES if p.name != "README.md" and "equation to code" in p.read_text()
]
ROW = re.compile(
    r"^\|\s*(?P<eq>[^|]+?)\s*\|\s*`(?P<code>(?:[^`]|\\\|)+)`\s*\|\s*`(?P<file>[^`]+)`"
)


def _map_rows(page):
    text = page.read_text()
    table = text.split("## From equation to code", 1)[1]
    return [m.groupdict() for line in table.splitlines() if (m := ROW.match(line))]


@pytest.mark.parametrize("page", OP_PAGES, ids=[p.stem for p in OP_PAGES])
def test_docs_equation_map_quotes_real_code_lines(page):
    rows = _map_rows(page)
    assert rows, f"{page.name} has no equation-to-code rows"
    for row in rows:
        code = row["code"].replace("\\|", "|")
        source = (ROOT / row["file"]).read_text()
        lines = {line.strip() for line in source.splitlines()}
        assert code in lines, f"{page.name}: `{code}` is not a line of {row['file']}"


@pytest.mark.parametrize("page", OP_PAGES, ids=[p.stem for p in OP_PAGES])
def test_docs_every_numbered_equation_of_the_module_is_mapped(page):
    rows = _map_rows(page)
    module = ROOT / "jaxderiv" / f"_{page.stem}.py"  # docs/softmax.md: _softmax.py
    tagged = set(re.findall(r"#.*?\((\d)\)", module.read_text()))
    mapped = set(re.findall(r"\((\d)\)", " ".join(r["eq"] for r in rows)))
    assert tagged <= mapped, f"{page.name} maps no code for equations {tagged - mapped}"


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_docs_display_math_is_balanced(page):
    text = page.read_text()
    assert text.count("$$") % 2 == 0, f"{page.name}: unbalanced $$"
    assert "\\begin{align" not in text, f"{page.name}: align is not rendered everywhere"


def test_docs_checking_page_examples_run_and_report_as_shown(capsys):
    page = (ROOT / "docs" / "checking-your-own-rule.md").read_text()
    namespace = {}
    for block in re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL):
        exec(compile(block, "checking-your-own-rule.md", "exec"), namespace)
    out = capsys.readouterr().out
    passed, failed = out.split("FAIL: ", 1)
    assert passed.startswith("PASS: weighted_sum")
    # The wrong rule is caught at `w` only, against both truths.
    failing = [line.split()[0] for line in failed.splitlines() if line.endswith("FAIL")]
    assert failing == ["w", "w"]
    # The page's pytest example, run after the wrong rule was registered, fails.
    with pytest.raises(AssertionError, match=r"FAIL: weighted_sum"):
        namespace["test_weighted_sum_rule"]()
