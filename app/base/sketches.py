"""Distinct counts that outlive raw events: a HyperLogLog sketch of the subject numbers
(retention/report_cells.py) a rollup row counted, mergeable across rows and days. A sketch
keeps hashed registers of numbers, never a pseudonym; once a subject's number is deleted (an
erasure, or no raw event of theirs left), nothing can tell whether the sketch counted them.

datasketches (and numpy under it) is imported on first use: the pixel's processes never need
it, and every one of them would pay for the import at start-up."""

from collections.abc import Iterable
from typing import Any

LG_K = 12  # 4,096 registers: a relative error of about 1.6 %


def _library() -> Any:
    import datasketches  # imported on first use: see above

    return datasketches


def sketch_of(numbers: Iterable[int]) -> bytes:
    """The serialized sketch of some subject numbers."""
    library = _library()
    sketch = library.hll_sketch(LG_K, library.tgt_hll_type.HLL_4)
    for number in numbers:
        sketch.update(number)
    serialized: bytes = sketch.serialize_compact()
    return serialized


class Union:
    """Sketches, subject numbers and pseudonyms without a number yet (which no sketch can
    hold) added up; `estimate()` is the distinct count of all of them."""

    def __init__(self) -> None:
        library = _library()
        self._sketch_type = library.hll_sketch
        self._union = library.hll_union(LG_K)
        self._loose = library.hll_sketch(LG_K, library.tgt_hll_type.HLL_4)

    def add_sketch(self, serialized: bytes) -> None:
        self._union.update(self._sketch_type.deserialize(serialized))

    def add(self, items: Iterable[int | str]) -> None:
        for item in items:
            self._loose.update(item)

    def estimate(self) -> int:
        self._union.update(self._loose)
        estimate: float = self._union.get_estimate()
        return round(estimate)
