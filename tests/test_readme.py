"""The README is an entry point that holds: its API example runs and learns, its quick-run
table is the `quick` config's, its test command is CI's, and every link under docs/ resolves."""

import glob
import os
import re
import subprocess
import sys

import mmjax
from tests.conftest import full_opt_env

ROOT = os.path.join(os.path.dirname(__file__), "..")
README = os.path.join(ROOT, "README.md")
WAYS = 5  # the API example's and the quick run's episodes


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as file:
        return file.read()


def test_api_example_runs_and_learns():
    section = _read(README).split("## The API in 20 lines", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert code.count("\n") <= 20
    # 100 meta-steps: XLA's full optimisation pays for its compile time (tests/conftest.py).
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=full_opt_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    first, last = map(float, re.search(r"loss (\S+) -> (\S+)", out.stdout).groups())
    # Mean loss of the first and last 10 meta-batches: meta-training lowers it.
    assert last < first, out.stdout
    accuracy, ci95 = map(float, re.search(r"query accuracy (\S+) \+- (\S+)", out.stdout).groups())
    # The 95% interval over the 100 test episodes lies above chance (1 / ways).
    assert accuracy - ci95 > 1 / WAYS, out.stdout


def test_quick_run_table_is_the_quick_config():
    text = _read(README)
    assert "mmjax train --config quick" in text
    section = text.split("## What the quick run gives", 1)[1].split("\n## ", 1)[0]
    row = next(line for line in section.splitlines() if line.startswith("| `quick` |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    inner, test_inner = map(int, re.search(r"(\d+) inner step.*\((\d+) at test\)", cells[1]).groups())
    config = mmjax.get_config("quick")
    assert config.get("algorithm", "maml") == "maml" and "second order" in cells[1]
    assert not config.maml.first_order
    assert (inner, test_inner) == (config.maml.num_inner_steps, config.maml.eval_num_inner_steps)
    assert int(cells[2]) == config.num_steps and int(cells[3]) == config.meta_batch_size
    assert config.ways == WAYS and "5-way 1-shot" in section and config.shots == 1
    accuracy, ci95 = map(float, re.search(r"([\d.]+)% ± ([\d.]+)%", cells[4]).groups())
    assert 100 / WAYS < accuracy - ci95 and accuracy + ci95 <= 100


def test_readme_test_command_is_what_ci_runs():
    ci = _read(os.path.join(ROOT, ".ci", "run"))
    command = ci.strip().splitlines()[-1]
    assert command.startswith("MMJAX_DATA_DIR=") and " -m pytest " in command
    assert command in _read(README)


def test_readme_is_an_entry_point():
    text = _read(README)
    assert len(text.splitlines()) <= 200
    for doc in ("design.md", "benchmarks.md", "multimodal.md"):
        assert f"](docs/{doc})" in text


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _links(path: str) -> list[str]:
    text = re.sub(r"```.*?```", "", _read(path), flags=re.S)  # links in code are not links
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_slug_matches_github():
    assert _slug("What the quick run gives") == "what-the-quick-run-gives"
    assert _slug("MAML meta-step speed, second vs first order") == (
        "maml-meta-step-speed-second-vs-first-order"
    )


def test_every_docs_link_resolves():
    pages = [README] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    checked = 0
    for page in pages:
        for link in _links(page):
            if re.match(r"[a-z]+://", link) or link.startswith("mailto:"):
                continue
            target, _, anchor = link.partition("#")
            path = os.path.normpath(os.path.join(os.path.dirname(page), target)) if target else page
            assert os.path.exists(path), f"{os.path.relpath(page, ROOT)}: {link} does not exist"
            if anchor:
                headings = re.findall(r"^#+ (.+)$", _read(path), re.M)
                assert anchor in {_slug(h) for h in headings}, (
                    f"{os.path.relpath(page, ROOT)}: no heading #{anchor} in {target or 'itself'}"
                )
            checked += 1
    assert checked >= 10  # README's docs/ links, the images and the cross-references
