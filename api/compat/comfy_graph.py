"""A ComfyUI workflow in API format read as a graph: its nodes' values and links, checked.

The API format is `{node_id: {"class_type": ..., "inputs": {name: value | [node_id,
output_index]}}}`. Reading a value or following a link checks it the way
ComfyUI's own validation does, and a fault names the node, the input and why,
in ComfyUI's error vocabulary (`value_not_in_list`, `value_bigger_than_max`,
`required_input_missing`, ...), so that a client shows it as it would
ComfyUI's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class NodeFault(Exception):
    """One node that cannot run, as ComfyUI reports it in `node_errors`."""

    node_id: str
    class_type: str
    type: str
    message: str
    details: str
    input_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_comfy(self) -> dict[str, Any]:
        extra = {"input_name": self.input_name, **self.extra} if self.input_name else self.extra
        return {
            "type": self.type,
            "message": self.message,
            "details": self.details,
            "extra_info": extra,
        }


class Graph:
    def __init__(self, prompt: dict[str, Any]):
        self.prompt = prompt

    def class_of(self, node_id: str) -> str:
        return str(self.prompt[node_id]["class_type"])

    def fault(
        self, node_id: str, kind: str, message: str, details: str, name: str | None
    ) -> NodeFault:
        return NodeFault(node_id, self.class_of(node_id), kind, message, details, name)

    def raw(self, node_id: str, name: str) -> Any:
        inputs = self.prompt[node_id].get("inputs") or {}
        if name not in inputs:
            raise self.fault(
                node_id, "required_input_missing", "Required input is missing", name, name
            )
        return inputs[name]

    def optional(self, node_id: str, name: str, default: Any) -> Any:
        inputs = self.prompt[node_id].get("inputs") or {}
        return inputs.get(name, default)

    def link(self, node_id: str, name: str, accepted: Mapping[str, int | None]) -> str:
        """The node `name` links to; it must be one of `accepted` (class: the output
        index it must use, None: any)."""
        value = self.raw(node_id, name)
        if not (isinstance(value, list) and len(value) == 2):
            raise self.fault(
                node_id,
                "bad_linked_input",
                "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                f"{name}, {value!r}",
                name,
            )
        source, index = str(value[0]), value[1]
        if source not in self.prompt:
            raise self.fault(
                node_id,
                "required_input_missing",
                "Required input is missing",
                f"{name}: linked to node {source!r}, which is not in the prompt",
                name,
            )
        kind = self.class_of(source)
        if kind not in accepted:
            raise self.fault(
                node_id,
                "return_type_mismatch",
                "Return type mismatch between linked nodes",
                f"{name}: darkroom takes it from " + " or ".join(accepted) + f", not {kind}",
                name,
            )
        wanted = accepted[kind]
        if wanted is not None and index != wanted:
            raise self.fault(
                node_id,
                "return_type_mismatch",
                "Return type mismatch between linked nodes",
                f"{name}: output {index} of {kind} is not the one it takes ({wanted})",
                name,
            )
        return source

    def number(self, node_id: str, name: str, low: float, high: float, whole: bool = True) -> Any:
        value = self.raw(node_id, name)
        kinds = (int,) if whole else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            what = "an integer" if whole else "a number"
            raise self.fault(
                node_id,
                "invalid_input_type",
                f"Failed to convert an input value to {what}",
                f"{name}, {value!r}",
                name,
            )
        if value < low:
            raise self.fault(
                node_id,
                "value_smaller_than_min",
                f"Value {value} smaller than min of {low:g}",
                f"{name}",
                name,
            )
        if value > high:
            raise self.fault(
                node_id,
                "value_bigger_than_max",
                f"Value {value} bigger than max of {high:g}",
                f"{name}",
                name,
            )
        return value

    def choice(self, node_id: str, name: str, options: list[str]) -> str:
        value = self.raw(node_id, name)
        if value not in options:
            raise self.fault(
                node_id,
                "value_not_in_list",
                "Value not in list",
                f"{name}: {value!r} not in {options}",
                name,
            )
        return str(value)

    def text(self, node_id: str, name: str) -> str:
        value = self.raw(node_id, name)
        if not isinstance(value, str):
            raise self.fault(
                node_id,
                "invalid_input_type",
                "Failed to convert an input value to a STRING",
                f"{name}, {value!r}",
                name,
            )
        return value
