"""How far a result is from the expected one, as the tests measure it."""


def rel_err(actual, expected):
    """max |a - e| / max |e| (0 when both vanish)."""
    den = expected.abs().max().item()
    num = (actual - expected).abs().max().item()
    return num if den == 0 else num / den
