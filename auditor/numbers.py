"""Numbers said one way, in detector summaries and every report alike.

- A number has 3 significant digits ("0.000571", "0.0423", "0.965", "12.3"); from 100 up it is rounded to a whole
  number with thousands separators ("1,843"); below 0.0001 it is written as "7.26e-6". Trailing zeros go ("0.5").
- A difference or shift carries its sign ("+0.942", "-1.73"); an interval is "[lo, hi]" in the same format.
- A p-value is "p < 0.001" or "p = 0.37" (two significant digits), never "p = 1".
- A one-sided test of a shift toward a trait says so when the data moved the other way: a shift whose interval lies
  below zero is "a significant shift away from the trait", with the p-value of that direction.
- A classifier AUC below chance is commented: cross-validation on two samples a classifier cannot tell apart gives
  AUCs under 0.5 (each held-out fold's class balance is the mirror of its training folds'), so it reads as "no
  difference", not as a signal.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["finite", "num", "signed", "interval", "p_value", "one_sided_p", "auc_note"]


def finite(v: Any) -> float | None:
    """`v` as a float when it is a finite number (not a bool), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def num(v: Any, sign: bool = False, group: bool = True) -> str:
    """3 significant digits (whole numbers from 100 up); `sign` puts "+" before positive values; `group` adds
    thousands separators (off inside "a, b" lists, where they would be ambiguous)."""
    x = finite(v)
    if x is None:
        return "—" if v is None else str(v)
    plus = "+" if sign and x > 0 else ""
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{plus}{v:,}" if group else f"{plus}{v}"
    a = abs(x)
    if a == 0:
        return "0"
    if a >= 99.95:
        return f"{plus}{x:,.0f}" if group else f"{plus}{x:.0f}"
    if a < 1e-4:
        mantissa, exponent = f"{x:.2e}".split("e")
        return f"{plus}{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    decimals = max(0, 2 - math.floor(math.log10(a)))
    text = f"{x:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return plus + text if text not in ("-0", "0") else "0"


def signed(v: Any) -> str:
    """A difference or shift: always with its sign."""
    return num(v, sign=True)


def interval(iv: Any, sign: bool = False) -> str:
    """"[lo, hi]" (or "—" when there is none)."""
    if not isinstance(iv, (list, tuple)) or len(iv) != 2:
        return "—"
    return f"[{num(iv[0], sign)}, {num(iv[1], sign)}]"


def p_value(p: Any) -> str:
    """ "p < 0.001" or "p = 0.37"; a p-value that would round to 1 is "p > 0.99"."""
    x = finite(p)
    if x is None:
        return "p = —"
    if x < 0.001:
        return "p < 0.001"
    if x > 0.99:
        return "p > 0.99"
    return f"p = {float(f'{x:.2g}'):g}"


def one_sided_p(p_toward: Any, iv: Any) -> str:
    """A one-sided test of a shift toward the trait, said plainly.

    When the interval lies wholly below zero the data moved away from the trait: that is what is said, with the
    p-value of a shift in that direction (1 - p), instead of a p-value near 1 that reads as "nothing".
    """
    x = finite(p_toward)
    if isinstance(iv, (list, tuple)) and len(iv) == 2 and finite(iv[1]) is not None and iv[1] < 0 and x is not None:
        return f"a significant shift away from the trait ({p_value(1 - x)} for a shift away)"
    return f"one-sided {p_value(p_toward)}"


def auc_note(auc: Any, iv: Any) -> str:
    """What a cross-validated two-sample AUC says, in words."""
    low = finite(iv[0]) if isinstance(iv, (list, tuple)) and len(iv) == 2 else None
    high = finite(iv[1]) if isinstance(iv, (list, tuple)) and len(iv) == 2 else None
    if low is not None and low > 0.5:
        return "the classifier tells them apart: the teacher's outputs differ from the reference"
    if high is not None and high < 0.5:
        return ("below chance (0.5), as cross-validation gives when a classifier cannot tell two samples apart: "
                "no detectable difference, not a signal")
    return "no difference detected"
