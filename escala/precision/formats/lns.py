"""Logarithmic number system (LNS): a sign and a fixed-point base-2 logarithm of the magnitude.

A nonzero value is ``(-1)**s * 2**L`` where ``L`` is a signed fixed-point number with ``i`` integer
bits (two's complement, so ``-2**(i-1) <= L < 2**(i-1)``) and ``f`` fraction bits; zero has its own
code. The relative spacing is constant: neighbours differ by the factor ``2**(2**-f)``.

Arithmetic (Swartzlander and Alexopoulos, "The sign/logarithm number system", IEEE Trans. Comput.
1975; Arnold et al., "Applying features of IEEE 754 to sign/logarithm arithmetic", 1992):

* multiplication adds logarithms, exactly: ``L = La + Lb``, ``s = sa xor sb``;
* addition of ``|a| >= |b|`` with ``d = Lb - La <= 0`` gives ``L = La + sb(d)`` with
  ``sb(d) = log2(1 + 2**d)`` for equal signs and ``L = La + db(d)`` with ``db(d) = log2(1 - 2**d)``
  for opposite signs (``d = 0`` cancels to zero). Hardware evaluates ``sb``/``db`` from a table with
  linear interpolation; ``add="table"`` does that (spacing ``2**-table_bits``, zero past
  ``d < -(f + 3)`` where ``sb`` is below half a unit of the result; ``db`` on ``-1 < d < 0``, where it
  is too steep to interpolate, exactly, standing in for a cotransformation), ``add="exact"`` evaluates them in
  float32. Either way the result is rounded to the ``2**-f`` grid once.

Conversion rounds ``log2|x|`` to the grid (to nearest in the log domain, as a converter would); the
stochastic mode instead picks the lower or upper neighbour with probabilities that make the *value*
unbiased, ``P(up) = (|x| - 2**lo) / (2**hi - 2**lo)``. Results above the largest magnitude saturate
(LNS has no infinity); results below the smallest nonzero magnitude flush to zero (no subnormals).
NaN stays NaN. Values are simulated as the float32 nearest to ``±2**L`` (computed in float64).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from escala.errors import UserError
from escala.precision.formats.base import Format

_LN2 = math.log(2.0)


class LNS(Format):
    name = "lns"

    def __init__(self, int_bits: int = 6, frac_bits: int = 8, add: str = "exact", table_bits: int = 4):
        if not 1 <= int_bits <= 7 or not 0 <= frac_bits <= 16:
            raise UserError(
                f"lns integer bits {int_bits} / fraction bits {frac_bits}: allowed 1..7 integer bits "
                "(float32 holds 2**±64) and 0..16 fraction bits"
            )
        if add not in ("exact", "table"):
            raise UserError(f"lns add mode {add!r}: choose 'exact' or 'table'")
        self.int_bits, self.frac_bits, self.add_mode = int(int_bits), int(frac_bits), add
        self.scale = 2.0**self.frac_bits
        self.lmax = 2.0 ** (self.int_bits - 1) - 1.0 / self.scale
        self.lmin = -(2.0 ** (self.int_bits - 1))
        self.table_bits = int(table_bits)
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- conversion --------------------------------------------------------------------------------
    @property
    def max(self) -> float:
        return 2.0**self.lmax

    @property
    def min_positive(self) -> float:
        return 2.0**self.lmin

    def _round_log(self, L, mag, stochastic, generator):
        """Round the real log ``L`` (of magnitude ``mag``) to the grid; see the module docstring."""
        if not stochastic:
            return torch.round(L * self.scale) / self.scale
        lo = torch.floor(L * self.scale) / self.scale
        hi = lo + 1.0 / self.scale
        p_up = (mag - torch.exp2(lo)) / (torch.exp2(hi) - torch.exp2(lo))
        u = torch.rand(L.shape, generator=generator, device=L.device, dtype=L.dtype)
        return torch.where(u < p_up, hi, lo)

    def quantize(self, x, stochastic=False, generator=None):
        x = x.float()
        mag = x.abs()
        L = self._round_log(torch.log2(mag), mag, stochastic, generator)  # log2(0) = -inf: zero
        L = self._finish(torch.where(mag == float("inf"), torch.full_like(L, self.lmax), L))
        return self.from_logs(L, torch.where(x < 0, -1.0, 1.0))

    # -- arithmetic in the log domain --------------------------------------------------------------
    # Internally a value is (L, sign) with L = -inf for zero and sign = +-1.0; conversions to and
    # from float32 happen once per operation (elementwise) or once per matmul (format_matmul).
    def to_logs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L, sign)`` of on-grid values; ``L = -inf`` for zero, NaN for NaN."""
        L = torch.round(torch.log2(x.abs()) * self.scale) / self.scale  # log2(0) = -inf stays -inf
        return L, torch.where(x < 0, -1.0, 1.0).to(x.dtype)

    def from_logs(self, L: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        # exp2 in float64, then rounded to float32: one canonical float32 per grid value (float32
        # exp2 differs by an ulp between vectorised and scalar code paths). exp2(-inf) = 0.
        return sign * torch.exp2(L.double()).to(L.dtype)

    def _finish(self, L: torch.Tensor) -> torch.Tensor:
        """Saturate above the range, flush below it to zero (-inf)."""
        L = torch.clamp(L, max=self.lmax)
        return torch.where(L < self.lmin, torch.full_like(L, float("-inf")), L)

    def mul_logs(self, La, sa, Lb, sb):
        """``L = La + Lb`` (exact on the grid), sign = product of signs; then saturate or flush."""
        return self._finish(La + Lb), sa * sb

    def add_logs(self, La, sa, Lb, sb, stochastic=False, generator=None):
        """``L = max + sb(d)`` (same signs) or ``max + db(d)`` (opposite), ``d = min - max <= 0``."""
        a_big = La >= Lb
        big, small = torch.maximum(La, Lb), torch.minimum(La, Lb)
        sign = torch.where(a_big, sa, sb)
        subtract = sa != sb
        # Both zero: d would be (-inf) - (-inf) = NaN; any d gives big + delta = -inf, use -inf.
        d = torch.where(big == float("-inf"), torch.full_like(big, float("-inf")), small - big)
        delta = self._exact(d, subtract) if self.add_mode == "exact" else self._table(d, subtract)
        L = big + delta  # exact cancellation: delta = -inf, L = -inf (zero)
        mag = torch.exp2(L) if stochastic else None
        L = self._round_log(L, mag, stochastic, generator)
        return self._finish(L), sign

    def mul(self, a, b):
        La, sa = self.to_logs(a)
        Lb, sb = self.to_logs(b)
        return self.from_logs(*self.mul_logs(La, sa, Lb, sb))

    def add(self, a, b, stochastic=False, generator=None):
        a, b = torch.broadcast_tensors(a, b)
        La, sa = self.to_logs(a)
        Lb, sb = self.to_logs(b)
        return self.from_logs(*self.add_logs(La, sa, Lb, sb, stochastic, generator))

    def matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a @ b`` with LNS products and a balanced tree of LNS additions, all in the log domain."""
        La, sa = self.to_logs(a)
        Lb, sb = self.to_logs(b)
        L, s = self.mul_logs(La[:, :, None], sa[:, :, None], Lb[None], sb[None])
        while L.shape[1] > 1:
            if L.shape[1] % 2:  # an odd count carries its last term up a level (adding zero is exact)
                L = torch.cat([L, torch.full_like(L[:, :1], float("-inf"))], 1)
                s = torch.cat([s, torch.ones_like(s[:, :1])], 1)
            L, s = self.add_logs(L[:, 0::2], s[:, 0::2], L[:, 1::2], s[:, 1::2])
        return self.from_logs(L[:, 0], s[:, 0])

    @staticmethod
    def _exact(d, subtract):
        two_d = torch.exp2(d)  # d = -inf (a zero operand): 2**d = 0 and the result is the other one
        return torch.log1p(torch.where(subtract, -two_d, two_d)) / _LN2  # d = 0, subtract: -inf

    def _table(self, d, subtract):
        """Linear interpolation in tables of ``sb``/``db`` sampled every ``2**-table_bits``."""
        sb_t, db_t = self._tables_on(d.device)
        h = 2.0**-self.table_bits
        pos = (-d / h).clamp(max=len(sb_t) - 1)
        k = pos.floor().long().clamp(max=len(sb_t) - 2)
        w = pos - k
        sb = sb_t[k] * (1 - w) + sb_t[k + 1] * w
        db = db_t[k] * (1 - w) + db_t[k + 1] * w
        # db is singular at d = 0 and too steep for linear interpolation on -1 < d < 0; hardware
        # handles that range by cotransformation, replaced here by the exact function.
        near = -d < 1.0
        db = torch.where(near, self._exact(d, torch.ones_like(subtract)), db)
        cut = -d > self.frac_bits + 3  # beyond the table both functions round to zero
        return torch.where(cut, torch.zeros_like(sb), torch.where(subtract, db, sb))

    def _tables_on(self, device):
        if device not in self._tables:
            n = int((self.frac_bits + 3) * 2**self.table_bits) + 2
            d = -torch.arange(n, dtype=torch.float64, device=device) * 2.0**-self.table_bits
            sb = torch.log1p(torch.exp2(d)) / _LN2
            db = torch.log1p(-torch.exp2(d)) / _LN2
            db[0] = db[1]  # unused: -1 < d <= 0 is computed exactly
            self._tables[device] = (sb.float(), db.float())
        return self._tables[device]

    def describe(self) -> dict[str, Any]:
        return {
            "format": f"lns{1 + self.int_bits + self.frac_bits}",
            "int_bits": self.int_bits,
            "frac_bits": self.frac_bits,
            "add": self.add_mode,
        }
