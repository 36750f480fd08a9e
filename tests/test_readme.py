"""The Python examples in README.md run as written and do what they say.

Each ```python block runs in a fresh namespace, in README order, and is then held
to what its section promises: a check below keyed by the section's heading, or,
for a block without one, `assert` statements in the block's own text. A block that
only runs fails here."""
import ast
import os
import re

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _blocks():
    """(heading of the enclosing '## ' section, code) of every python block in README.md."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    out, heading = [], ""
    for m in re.finditer(r"^## ([^\n]+)$|^```python\n(.*?)^```", text, re.M | re.S):
        if m.group(1) is not None:
            heading = m.group(1).strip()
        else:
            out.append((heading, m.group(2)))
    return out


def _check_ops(scope):
    # "gradient reaches x only (OTTT: membrane detached)", and the multi-step op back-propagates to x_seq
    assert scope["x"].grad is not None and scope["x"].grad.shape == scope["x"].shape
    assert scope["v"].grad_fn is None and not scope["v"].requires_grad
    assert scope["x_seq"].grad is not None and scope["x_seq"].grad.abs().sum() > 0
    assert scope["s_seq"].shape == scope["x_seq"].shape


def _check_layers(scope):
    # "trains one step and predicts a class per sample"
    assert scope["pred"].shape == (32,)
    assert torch.isfinite(scope["loss"])


def _check_use_it(scope):
    # a converted SpikingJelly model learns the toy task with train_step and evaluate (10 classes: chance 10%)
    assert torch.isfinite(scope["loss"])
    assert scope["acc"] >= 0.8
    assert not any(type(m).__module__.startswith("spikingjelly") and list(m.parameters(recurse=False))
                   for m in scope["model"].modules()), "convert left SpikingJelly synapses in the model"


CHECKS = {
    "Quick start": _check_use_it,
    "The ops": _check_ops,
    "Layers and training modes": _check_layers,
}
NEEDS = {"Quick start": "spikingjelly"}


def _has_assert(code):
    return any(isinstance(node, ast.Assert) for node in ast.walk(ast.parse(code)))


BLOCKS = _blocks()


def test_readme_has_the_examples_checked_here():
    headings = [h for h, _ in BLOCKS]
    assert set(CHECKS) <= set(headings), set(CHECKS) - set(headings)


@pytest.mark.parametrize("heading,code", BLOCKS, ids=[f"{i}-{h}" for i, (h, _) in enumerate(BLOCKS)])
def test_readme_example(heading, code):
    if heading in NEEDS:
        pytest.importorskip(NEEDS[heading])
    check = CHECKS.get(heading)
    assert check is not None or _has_assert(code), (
        f"the README example under '## {heading}' only runs: add a check to tests/test_readme.py or an "
        "assert of what it promises to the example")
    scope = {"__name__": "__readme__"}
    exec(compile(code, f"README.md ({heading})", "exec"), scope)
    if check is not None:
        check(scope)
