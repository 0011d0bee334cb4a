"""Rewrite deploy/k8s/model-config.yaml from model_config.yaml.

The Kubernetes manifests carry the model registry inlined in a ConfigMap
(kustomize may not read files outside deploy/k8s). Run this after editing
model_config.yaml; tests/deploy fails while the two differ.

    python scripts/sync_k8s_model_config.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "model_config.yaml"
TARGET = ROOT / "deploy" / "k8s" / "model-config.yaml"

HEADER = """\
# GENERATED from model_config.yaml by scripts/sync_k8s_model_config.py: edit
# model_config.yaml, then run that script. tests/deploy checks they are equal.
# Workers and the API read it at start (MODEL_CONFIG): after a change,
# `kubectl rollout restart deployment -l app.kubernetes.io/part-of=darkroom`.
apiVersion: v1
kind: ConfigMap
metadata:
  name: darkroom-models
  labels:
    app.kubernetes.io/name: darkroom
    app.kubernetes.io/part-of: darkroom
data:
  model_config.yaml: {indicator}
"""


def render(text: str) -> str:
    """The ConfigMap manifest whose data["model_config.yaml"] is exactly `text`."""
    if "\t" in text or "\r" in text:
        raise ValueError("model_config.yaml must not contain tabs or carriage returns")
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()  # the last newline ends the last line
    # Block scalar chomping: clip keeps one final newline, keep (+) keeps them
    # all, strip (-) keeps none. An explicit indentation indicator makes a first
    # line that starts with spaces unambiguous.
    trailing = len(text) - len(text.rstrip("\n"))
    chomp = {0: "-", 1: ""}.get(trailing, "+")
    indicator = "|2" + chomp
    body = "".join(("    " + line if line else "") + "\n" for line in lines)
    return HEADER.format(indicator=indicator) + body


def main() -> int:
    text = SOURCE.read_text(encoding="utf-8")
    manifest = render(text)
    loaded = yaml.safe_load(manifest)["data"]["model_config.yaml"]
    if loaded != text:
        print("cannot inline model_config.yaml faithfully", file=sys.stderr)
        return 1
    TARGET.write_text(manifest, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
