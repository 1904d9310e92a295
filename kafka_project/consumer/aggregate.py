"""The running aggregate: count and exact total of processed orders, and their average."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
# No order is priced above this (order_codec.MAX_PRICE): a restored total above count times it is
# not one this program wrote.
MAX_PRICE = Decimal("100000.00")


@dataclass
class RunningAverage:
    count: int = 0
    total_price: Decimal = Decimal("0.00")

    @classmethod
    def restored(cls, count: object, total: object) -> RunningAverage:
        """An aggregate read back from outside (a snapshot, offset metadata), as this program writes
        it: a whole count, and a total in whole cents that count orders can reach. ValueError
        otherwise: a total of 1e999999 or NaN would break every figure computed from it."""
        if type(count) is not int or count < 0:
            raise ValueError(f"count {count!r} is not a whole number")
        if not isinstance(total, str) or len(total) > 40:
            raise ValueError("total is not a decimal string")
        amount = Decimal(total)  # decimal.InvalidOperation, a ValueError-like ArithmeticError
        if not amount.is_finite() or not 0 <= amount <= count * MAX_PRICE or amount != amount.quantize(CENT):
            raise ValueError(f"total {total!r} is not a sum of {count} prices")
        return cls(count, amount)

    def add(self, price: Decimal) -> None:
        self.count += 1
        self.total_price += price

    @property
    def avg(self) -> Decimal:
        """The mean rounded half-up to the cent, as money is shown; 0.00 before the first order."""
        if not self.count:
            return Decimal("0.00")
        return (self.total_price / self.count).quantize(CENT, rounding=ROUND_HALF_UP)

    def __str__(self) -> str:
        return f"Running Average: ${self.avg} (Total: ${self.total_price}, Count: {self.count})"
