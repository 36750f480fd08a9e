"""The Python examples in README.md run as written and do what they say."""
import os
import re

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_examples_run():
    text = open(os.path.join(ROOT, "README.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    for code in blocks:
        scope = {}
        exec(compile(code, "README.md", "exec"), scope)
    # The last example trains one step and predicts a class per sample.
    assert scope["pred"].shape == (32,)
    assert torch.isfinite(scope["loss"])
