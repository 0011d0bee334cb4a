"""A ComfyUI workflow of core nodes as one darkroom generation, or ComfyUI's refusal.

The graph is read backwards from its output nodes (SaveImage, PreviewImage):
VAEDecode, the KSampler, what feeds it (checkpoint and LoRA loaders, the text
encoders, a latent: empty, encoded from an uploaded image, masked, or the
upscaled latent of a first KSampler for the hires fix). What it finds becomes
`JobCreate` fields; a node darkroom cannot run, a missing link, a model not in
the registry, a value outside ComfyUI's own range: each is a `NodeFault`, and
the whole prompt is refused in ComfyUI's shape with nothing queued.

Seeds: ComfyUI's run 0..2^64-1 (Open WebUI draws up to 2^50), darkroom's are
32-bit. The job's seed is ComfyUI's modulo 2^32 (a seed below 2^32 is kept as
it is), so the same seed always makes the same image; the seed as sent is
kept in the job's params (`source_seed`) and in the history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from api.compat.comfy_graph import Graph, NodeFault
from api.compat.comfy_names import LATENT_UPSCALE_METHODS, SAMPLERS, SCHEDULERS, SPACING_ONLY
from shared.samplers import FLOW_TYPES

MAX_COMFY_SEED = 2**64 - 1
SEED_SPACE = 2**32
# What a prompt may ask of EmptyLatentImage: at most this many images (a job per 4).
MAX_BATCH = 64
# Output nodes, and the `type` of the files they make (ComfyUI's folders).
OUTPUT_NODES = {"SaveImage": "output", "PreviewImage": "temp"}
CHECKPOINT = {"CheckpointLoaderSimple": None}
MODEL_SOURCES = {"CheckpointLoaderSimple": 0, "LoraLoader": 0, "LoraLoaderModelOnly": 0}
CLIP_SOURCES = {"CheckpointLoaderSimple": 1, "LoraLoader": 1}
SAMPLER_NODES = {"KSampler": 0, "KSamplerAdvanced": 0}
ENCODED = {"VAEEncode": 0}
IMAGE_SOURCES = {"LoadImage": 0}
MASK_SOURCES = {"LoadImageMask": 0, "LoadImage": 1}
NODES = frozenset(
    {
        *OUTPUT_NODES,
        *MODEL_SOURCES,
        *SAMPLER_NODES,
        "CLIPTextEncode",
        "EmptyLatentImage",
        "VAEDecode",
        "VAEEncode",
        "VAEEncodeForInpaint",
        "SetLatentNoiseMask",
        "LoadImage",
        "LoadImageMask",
        "LatentUpscale",
        "LatentUpscaleBy",
    }
)
_WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin", ".pth")


@dataclass(frozen=True)
class Upload:
    """An image a LoadImage/LoadImageMask node names (POST /upload/image put it there)."""

    node_id: str
    name: str
    channel: str | None = None  # a mask's: "alpha", "red", ...; None: an image


@dataclass
class Plan:
    """The generation a workflow asks for."""

    fields: dict[str, Any]  # JobCreate fields, but seed, num_images and the images
    seed: int  # ComfyUI's, as sent
    batch_size: int
    sampler_node: str
    outputs: dict[str, str]  # output node id -> "output" | "temp"
    prefixes: dict[str, str] = field(default_factory=dict)
    image: Upload | None = None
    mask: Upload | None = None


class WorkflowInvalid(Exception):
    """The prompt as ComfyUI refuses one: `{"error": ..., "node_errors": ...}`."""

    def __init__(self, error: dict[str, Any], node_errors: dict[str, Any] | None = None):
        super().__init__(error["message"])
        self.error = error
        self.node_errors = node_errors or {}

    def as_comfy(self) -> dict[str, Any]:
        return {"error": self.error, "node_errors": self.node_errors}


def job_seed(seed: int) -> int:
    return seed % SEED_SPACE


def model_name(ckpt_name: str) -> str:
    """A registry name from ComfyUI's `ckpt_name` (a file name, extension and all)."""
    path = PurePosixPath(ckpt_name)
    return path.stem if path.suffix.lower() in _WEIGHT_SUFFIXES else ckpt_name


def translate(prompt: Any, models: dict[str, str], loras: set[str] | None = None) -> Plan:
    """The generation `prompt` asks for. `models`: registry name -> model type."""
    if not isinstance(prompt, dict) or not prompt:
        raise WorkflowInvalid(_error("no_prompt", "No prompt provided", ""))
    _check_node_types(prompt)
    outputs = {
        i: OUTPUT_NODES[n["class_type"]]
        for i, n in prompt.items()
        if n["class_type"] in OUTPUT_NODES
    }
    if not outputs:
        raise WorkflowInvalid(_error("prompt_no_outputs", "Prompt has no outputs", ""))
    reader = _Reader(Graph(prompt), models, loras)
    plans: dict[str, Plan] = {}
    faults: dict[str, NodeFault] = {}
    for output in outputs:
        try:
            plans[output] = reader.output(output)
        except NodeFault as fault:
            faults[output] = fault
    if not faults:
        first = next(iter(plans.values()))
        for output, plan in plans.items():
            if plan.sampler_node != first.sampler_node:
                faults[output] = NodeFault(
                    output,
                    prompt[output]["class_type"],
                    "prompt_outputs_failed_validation",
                    "darkroom runs one generation per prompt",
                    f"images: made by KSampler {plan.sampler_node}, not {first.sampler_node}",
                    "images",
                )
    if faults:
        raise WorkflowInvalid(
            _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", ""),
            _node_errors(faults),
        )
    plan = next(iter(plans.values()))
    plan.outputs = outputs
    plan.prefixes = {
        o: str(prompt[o].get("inputs", {}).get("filename_prefix", "ComfyUI")) for o in outputs
    }
    return plan


def _check_node_types(prompt: dict[str, Any]) -> None:
    faults = {}
    for node_id, node in prompt.items():
        kind = node.get("class_type") if isinstance(node, dict) else None
        if kind in NODES:
            continue
        message = (
            f"Node '#{node_id}' has no class_type."
            if kind is None
            else f"Node '{kind}' not found: darkroom runs ComfyUI's core nodes only "
            "(GET /object_info lists them)."
        )
        faults[node_id] = NodeFault(
            node_id, str(kind), "missing_node_type", message, f"Node ID '#{node_id}'"
        )
    if faults:
        first = next(iter(faults.values()))
        error = first.as_comfy()
        error["extra_info"] = {"node_id": first.node_id, "class_type": first.class_type}
        raise WorkflowInvalid(error, _node_errors(faults))


def _node_errors(faults: dict[str, NodeFault]) -> dict[str, Any]:
    """ComfyUI's `node_errors`: per failing node, its errors and the outputs it blocks."""
    errors: dict[str, Any] = {}
    for output, fault in faults.items():
        entry = errors.setdefault(
            fault.node_id,
            {"errors": [fault.as_comfy()], "dependent_outputs": [], "class_type": fault.class_type},
        )
        if output != fault.node_id or fault.type != "missing_node_type":
            entry["dependent_outputs"].append(output)
    return errors


def _error(kind: str, message: str, details: str) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}


class _Reader:
    def __init__(self, graph: Graph, models: dict[str, str], loras: set[str] | None):
        self.graph = graph
        self.models = models
        self.loras = loras

    def output(self, node_id: str) -> Plan:
        decode = self.graph.link(node_id, "images", {"VAEDecode": 0})
        sampler = self.graph.link(decode, "samples", SAMPLER_NODES)
        self.graph.link(decode, "vae", CHECKPOINT)
        return self.sampling(sampler)

    def sampling(self, node_id: str) -> Plan:
        g = self.graph
        fields, seed = self.sampler_settings(node_id)
        denoise = fields.pop("denoise")
        latent = g.link(node_id, "latent_image", _LATENTS)
        kind = g.class_of(latent)
        if kind in ("LatentUpscale", "LatentUpscaleBy"):
            return self.hires(node_id, latent, fields, denoise)
        plan = Plan(fields, seed, 1, node_id, {})
        if kind == "EmptyLatentImage":
            if denoise < 1:
                raise g.fault(
                    node_id,
                    "invalid_input",
                    "denoise below 1 needs an image",
                    "denoise: an empty latent is denoised in full (encode an image "
                    "with VAEEncode for image-to-image)",
                    "denoise",
                )
            fields["width"] = g.number(latent, "width", 16, 16384)
            fields["height"] = g.number(latent, "height", 16, 16384)
            plan.batch_size = g.number(latent, "batch_size", 1, MAX_BATCH)
            return plan
        if denoise <= 0:
            raise g.fault(
                node_id, "value_smaller_than_min", "denoise 0 changes nothing", "denoise", "denoise"
            )
        fields["strength"] = denoise
        if kind == "VAEEncode":
            plan.image = self.image(g.link(latent, "pixels", IMAGE_SOURCES))
        elif kind == "SetLatentNoiseMask":
            encoded = g.link(latent, "samples", ENCODED)
            plan.image = self.image(g.link(encoded, "pixels", IMAGE_SOURCES))
            plan.mask = self.mask(latent)
        else:  # VAEEncodeForInpaint
            plan.image = self.image(g.link(latent, "pixels", IMAGE_SOURCES))
            plan.mask = self.mask(latent)
        return plan

    def hires(self, node_id: str, upscale: str, fields: dict[str, Any], denoise: float) -> Plan:
        """A second KSampler on the upscaled latents of a first: darkroom's hires fix."""
        g = self.graph
        first = g.link(upscale, "samples", SAMPLER_NODES)
        plan = self.sampling(first)
        if plan.image is not None or "hires" in plan.fields:
            raise g.fault(
                first,
                "invalid_input",
                "hires needs a text-to-image first pass",
                "latent_image: the first KSampler must start from EmptyLatentImage",
                "latent_image",
            )
        for name in ("model", "prompt", "negative_prompt", "loras"):
            if fields.get(name) != plan.fields.get(name):
                raise g.fault(
                    node_id,
                    "invalid_input",
                    "the second pass differs from the first",
                    f"{name}: darkroom's hires fix runs both passes with the same "
                    "model, LoRAs and prompts",
                    name,
                )
        method = g.choice(upscale, "upscale_method", list(LATENT_UPSCALE_METHODS))
        hires: dict[str, Any] = {
            "steps": fields["steps"],
            "strength": denoise,
            "upscaler": LATENT_UPSCALE_METHODS[method],
        }
        if g.class_of(upscale) == "LatentUpscaleBy":
            hires["scale"] = g.number(upscale, "scale_by", 0.01, 8.0, whole=False)
        else:
            hires["width"] = g.number(upscale, "width", 0, 16384) or None
            hires["height"] = g.number(upscale, "height", 0, 16384) or None
        plan.fields["hires"] = hires
        plan.sampler_node = node_id
        return plan

    def sampler_settings(self, node_id: str) -> tuple[dict[str, Any], int]:
        g = self.graph
        advanced = g.class_of(node_id) == "KSamplerAdvanced"
        seed = g.number(node_id, "noise_seed" if advanced else "seed", 0, MAX_COMFY_SEED)
        steps = g.number(node_id, "steps", 1, 10000)
        if advanced:
            self.check_advanced(node_id, steps)
        model, loras = self.model(g.link(node_id, "model", MODEL_SOURCES))
        sampler = g.choice(node_id, "sampler_name", list(SAMPLERS))
        schedule: str | None = SCHEDULERS[g.choice(node_id, "scheduler", list(SCHEDULERS))]
        if self.models[model] in FLOW_TYPES and schedule in SPACING_ONLY:
            schedule = None  # a flow model's own spacing (see comfy_names)
        fields: dict[str, Any] = {
            "model": model,
            "prompt": self.prompt_text(g.link(node_id, "positive", {"CLIPTextEncode": 0})),
            # "": no negative prompt at all (darkroom's None would be the model's own).
            "negative_prompt": self.prompt_text(g.link(node_id, "negative", {"CLIPTextEncode": 0})),
            "steps": steps,
            "guidance_scale": g.number(node_id, "cfg", 0.0, 100.0, whole=False),
            "sampler": SAMPLERS[sampler],
            "scheduler": schedule,
            "loras": [{"name": n, "scale": s} for n, s in loras] or None,
            "denoise": 1.0 if advanced else g.number(node_id, "denoise", 0.0, 1.0, whole=False),
        }
        return fields, seed

    def check_advanced(self, node_id: str, steps: int) -> None:
        """KSamplerAdvanced maps where it runs the whole schedule from fresh noise."""
        g = self.graph
        runs_whole = (
            g.optional(node_id, "add_noise", "enable") == "enable"
            and g.optional(node_id, "start_at_step", 0) == 0
            and g.optional(node_id, "end_at_step", 10000) >= steps
            and g.optional(node_id, "return_with_leftover_noise", "disable") == "disable"
        )
        if not runs_whole:
            raise g.fault(
                node_id,
                "invalid_input",
                "darkroom runs whole schedules only",
                "add_noise, start_at_step, end_at_step, return_with_leftover_noise: "
                "only a whole schedule from fresh noise (enable, 0, >= steps, disable)",
                "start_at_step",
            )

    def model(self, node_id: str) -> tuple[str, list[tuple[str, float]]]:
        """The checkpoint under a chain of LoRA loaders, and the adapters on it."""
        g = self.graph
        loras: list[tuple[str, float]] = []
        while g.class_of(node_id) != "CheckpointLoaderSimple":
            name = model_name(g.text(node_id, "lora_name"))
            if self.loras is not None and name not in self.loras:
                raise g.fault(
                    node_id,
                    "value_not_in_list",
                    "Value not in list",
                    f"lora_name: {name!r} not in {sorted(self.loras)}",
                    "lora_name",
                )
            loras.insert(
                0, (name, float(g.number(node_id, "strength_model", -100.0, 100.0, whole=False)))
            )
            node_id = g.link(node_id, "model", MODEL_SOURCES)
        name = model_name(g.text(node_id, "ckpt_name"))
        if name not in self.models:
            raise g.fault(
                node_id,
                "value_not_in_list",
                "Value not in list",
                f"ckpt_name: {g.raw(node_id, 'ckpt_name')!r} not in {sorted(self.models)}",
                "ckpt_name",
            )
        return name, loras

    def prompt_text(self, node_id: str) -> str:
        self.graph.link(node_id, "clip", CLIP_SOURCES)
        return self.graph.text(node_id, "text")

    def image(self, node_id: str) -> Upload:
        return Upload(node_id, self.graph.text(node_id, "image"))

    def mask(self, node_id: str) -> Upload:
        g = self.graph
        source = g.link(node_id, "mask", MASK_SOURCES)
        if g.class_of(source) == "LoadImage":
            return Upload(source, g.text(source, "image"), "alpha")
        channel = g.choice(source, "channel", ["alpha", "red", "green", "blue"])
        return Upload(source, g.text(source, "image"), channel)


_LATENTS: dict[str, int | None] = {
    "EmptyLatentImage": 0,
    "VAEEncode": 0,
    "SetLatentNoiseMask": 0,
    "VAEEncodeForInpaint": 0,
    "LatentUpscale": 0,
    "LatentUpscaleBy": 0,
}
