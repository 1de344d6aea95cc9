"""The README's API example runs as written."""

import os
import re
import subprocess
import sys

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def test_api_example_runs():
    text = open(README).read()
    section = text.split("## The API in 20 lines", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert code.count("\n") <= 30
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    accuracy = float(out.stdout.split("query accuracy")[1])
    assert 0.0 <= accuracy <= 1.0


def test_readme_test_command_is_what_ci_runs():
    text = open(README).read()
    ci = open(os.path.join(os.path.dirname(README), ".ci", "run")).read()
    command = ci.strip().splitlines()[-1]
    assert command in text
