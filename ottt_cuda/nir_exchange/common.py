"""What reading and writing NIR share: the error, the lazy import of `nir`, and parameter checks."""
import math

import numpy as np

RTOL = 1e-6  # the parameters' own float32 rounding (snnTorch writes float32 arrays); nothing is approximated


class NIRConversionError(TypeError):
    """A NIR node (or an ottt_cuda layer) the other side cannot express exactly, or a graph that is not a chain."""


def nir_module():
    try:
        import nir
    except ImportError as e:  # pragma: no cover - the tests skip without nir
        raise ImportError("ottt_cuda.from_nir / to_nir need the NIR library: pip install nir") from e
    return nir


def fail(name, node, why):
    raise NIRConversionError(f"NIR node {name!r} ({type(node).__name__}): {why}")


def scalar(name, node, field, value):
    a = np.asarray(value, dtype=np.float64).reshape(-1)
    if a.size == 0:
        fail(name, node, f"{field} is empty")
    if not np.all(a == a[0]):
        fail(name, node, f"{field} differs between neurons ({a.min()} .. {a.max()}); ottt_cuda's neurons take one "
                          "value per layer")
    return float(a[0])


def close(a, b):
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=0.0)


def check_dt(dt):
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not dt > 0 or not math.isfinite(dt):
        raise ValueError(f"dt must be a positive finite number (NIR's time step), got {dt!r}")
    return float(dt)
