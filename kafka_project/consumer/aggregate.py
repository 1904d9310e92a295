"""The running aggregate: count and exact total of processed orders, and their average."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")


@dataclass
class RunningAverage:
    count: int = 0
    total_price: Decimal = Decimal("0.00")

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
