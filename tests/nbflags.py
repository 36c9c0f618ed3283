"""nbdev test flags for notebook cells, shared by the pytest notebook collector (`conftest.py`) and
`tests/execute_notebooks.py`, so that both skip exactly the cells `nbdev_test` skips."""
import os
import re

TST_FLAGS = ("notest", "slow", "cuda")  # as `tst_flags` in settings.ini
_DIRECTIVE = re.compile(r"^\s*#\s*\|\s*(.+?)\s*$")


def directives(source: str) -> list:
    "The nbdev directives (`#| ...` lines) at the top of a cell, as lists of words."
    found = []
    for line in source.splitlines():
        if not line.strip(): continue
        m = _DIRECTIVE.match(line)
        if not m: break
        found.append(m.group(1).replace(":", " ").split())
    return found


def enabled_flags() -> set:
    "Flags switched on for this run, e.g. SSL_AE_TEST_FLAGS='slow cuda' runs the cells marked so (like `nbdev_test --flags`)."
    return set(os.environ.get("SSL_AE_TEST_FLAGS", "").split())


def skip_reason(source: str, enabled=None):
    "Why a cell is not executed under test, or None if it is."
    enabled = enabled_flags() if enabled is None else enabled
    for words in directives(source):
        if words[:1] == ["eval"] and words[1:2] == ["false"]: return "#| eval: false"
        if words and words[0] in TST_FLAGS and words[0] not in enabled: return f"#| {words[0]}"
    return None
