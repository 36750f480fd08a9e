"""Training command line and its parts: `python -m ottt_cuda.train DATASET [options]`.

- cli.py          options and the resolved configuration
- recipes.py      the paper's per-dataset settings
- data.py         data sets, on-disk formats, augmentations
- runner.py       the run: epochs, evaluation, logging, checkpoints
- checkpoint.py   save/load with every RNG state (exact resume)
- distributed.py  data parallelism over torch.distributed (torchrun)
- stats.py        firing-rate statistics
- progress.py     the per-epoch progress bar
"""
from .cli import main, parser, resolve
from .recipes import DATASETS, RECIPES, Recipe

__all__ = ["main", "parser", "resolve", "DATASETS", "RECIPES", "Recipe"]
