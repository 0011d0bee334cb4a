"""Read a /metrics endpoint with prometheus_client's own parser, and look values up."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[str, dict[str, str], float]


@dataclass
class Samples:
    families: set[str]
    all: list[Sample]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels`.

        Raises if none matches: a missing series is a failure, never a zero.
        """
        matching = [
            value
            for sample, sample_labels, value in self.all
            if sample == name and labels.items() <= sample_labels.items()
        ]
        if not matching:
            raise KeyError(f"no sample {name}{labels}; have {sorted({s for s, _, _ in self.all})}")
        return sum(matching)

    def total(self, family: str) -> float:
        """Every sample of a family that must be exposed (zero when it has none now)."""
        # The parser names a counter's family without its _total suffix.
        if family.removesuffix("_total") not in self.families:
            raise KeyError(f"no metric family {family}; have {sorted(self.families)}")
        return sum(value for sample, _, value in self.all if sample == family)


def read_metrics(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    families = list(text_string_to_metric_families(response.text))
    return Samples(
        families={family.name for family in families},
        all=[(s.name, dict(s.labels), s.value) for family in families for s in family.samples],
    )
