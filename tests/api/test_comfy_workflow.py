"""ComfyUI workflows read into one darkroom generation, or refused in ComfyUI's shape."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from api.compat.comfy_workflow import MAX_COMFY_SEED, WorkflowInvalid, job_seed, translate
from tests.support.comfyui import example_client, open_webui

MODELS = {"tiny-sd": "sd", "flux": "flux"}


def example() -> dict[str, Any]:
    workflow: dict[str, Any] = json.loads(example_client.PROMPT_TEXT)
    workflow["4"]["inputs"]["ckpt_name"] = "tiny-sd.safetensors"
    return workflow


def refused(workflow: Any, models: dict[str, str] = MODELS) -> WorkflowInvalid:
    with pytest.raises(WorkflowInvalid) as caught:
        translate(workflow, models, loras={"watercolor"})
    return caught.value


def test_open_webuis_default_workflow() -> None:
    workflow = open_webui.workflow_for("tiny-sd", "a red fox", 64, 48, 2, seed=2**50 - 3)
    plan = translate(workflow, MODELS)
    assert plan.fields == {
        "model": "tiny-sd",
        "prompt": "a red fox",
        "negative_prompt": "",
        "steps": 2,
        "guidance_scale": 8,
        "sampler": "Euler",
        "scheduler": "normal",
        "loras": None,
        "width": 64,
        "height": 48,
    }
    assert (plan.seed, plan.batch_size, plan.sampler_node) == (2**50 - 3, 1, "3")
    assert plan.outputs == {"9": "output"}
    assert plan.prefixes == {"9": "ComfyUI"}


def test_comfyuis_example_client_workflow() -> None:
    plan = translate(example(), MODELS)
    assert (plan.fields["prompt"], plan.fields["negative_prompt"]) == (
        "masterpiece best quality girl",
        "bad hands",
    )
    assert plan.prefixes == {"9": "ccniyUI"}


def test_seeds_keep_comfyuis_range_and_fold_into_32_bits() -> None:
    assert job_seed(5) == 5
    assert job_seed(2**32 + 5) == 5
    assert job_seed(MAX_COMFY_SEED) == 2**32 - 1
    workflow = example()
    workflow["3"]["inputs"]["seed"] = MAX_COMFY_SEED
    assert translate(workflow, MODELS).seed == MAX_COMFY_SEED


@pytest.mark.parametrize(
    ("seed", "kind"), [(-1, "value_smaller_than_min"), (2**64, "value_bigger_than_max")]
)
def test_a_seed_outside_comfyuis_range_is_a_node_error(seed: int, kind: str) -> None:
    workflow = example()
    workflow["3"]["inputs"]["seed"] = seed
    answer = refused(workflow).as_comfy()
    assert answer["error"]["type"] == "prompt_outputs_failed_validation"
    [error] = answer["node_errors"]["3"]["errors"]
    assert (error["type"], error["extra_info"]["input_name"]) == (kind, "seed")
    assert answer["node_errors"]["3"]["dependent_outputs"] == ["9"]
    assert answer["node_errors"]["3"]["class_type"] == "KSampler"


def test_an_unknown_node_is_named() -> None:
    workflow = example()
    workflow["10"] = {"class_type": "UltimateSDUpscale", "inputs": {}}
    answer = refused(workflow).as_comfy()
    assert answer["error"]["type"] == "missing_node_type"
    assert "UltimateSDUpscale" in answer["error"]["message"]
    assert answer["node_errors"]["10"]["class_type"] == "UltimateSDUpscale"


def test_a_missing_link_is_a_node_error() -> None:
    workflow = example()
    workflow["8"]["inputs"]["samples"] = ["42", 0]
    answer = refused(workflow).as_comfy()
    [error] = answer["node_errors"]["8"]["errors"]
    assert error["type"] == "required_input_missing"
    assert "'42'" in error["details"]
    del workflow["8"]["inputs"]["samples"]
    [error] = refused(workflow).as_comfy()["node_errors"]["8"]["errors"]
    assert (error["type"], error["details"]) == ("required_input_missing", "samples")


def test_a_model_not_in_the_registry_is_a_node_error() -> None:
    workflow = example()
    workflow["4"]["inputs"]["ckpt_name"] = "v1-5-pruned-emaonly.ckpt"
    [error] = refused(workflow).as_comfy()["node_errors"]["4"]["errors"]
    assert error["type"] == "value_not_in_list"
    assert "v1-5-pruned-emaonly.ckpt" in error["details"]
    assert "tiny-sd" in error["details"]


@pytest.mark.parametrize(
    ("node", "name", "value", "kind"),
    [
        ("3", "sampler_name", "dpm_fast", "value_not_in_list"),
        ("3", "scheduler", "kl_optimal", "value_not_in_list"),
        ("3", "steps", 0, "value_smaller_than_min"),
        ("3", "cfg", "high", "invalid_input_type"),
        ("5", "batch_size", 65, "value_bigger_than_max"),
        ("6", "text", 7, "invalid_input_type"),
    ],
)
def test_values_outside_what_runs_are_node_errors(
    node: str, name: str, value: Any, kind: str
) -> None:
    workflow = example()
    workflow[node]["inputs"][name] = value
    [error] = refused(workflow).as_comfy()["node_errors"][node]["errors"]
    assert (error["type"], error["extra_info"]["input_name"]) == (kind, name)


def test_no_prompt_and_no_outputs() -> None:
    assert refused({}).error["type"] == "no_prompt"
    workflow = example()
    del workflow["9"]
    assert refused(workflow).error["type"] == "prompt_no_outputs"


def test_samplers_and_schedulers_by_comfyuis_names() -> None:
    workflow = example()
    workflow["3"]["inputs"].update(sampler_name="dpmpp_3m_sde_gpu", scheduler="karras")
    fields = translate(workflow, MODELS).fields
    assert (fields["sampler"], fields["scheduler"]) == ("DPM++ 3M SDE", "karras")
    # A flow model runs its own spacing for ComfyUI's "simple".
    workflow["4"]["inputs"]["ckpt_name"] = "flux"
    workflow["3"]["inputs"].update(sampler_name="euler", scheduler="simple")
    assert translate(workflow, MODELS).fields["scheduler"] is None


def test_lora_loaders_chain_onto_the_checkpoint() -> None:
    workflow = example()
    workflow["10"] = {
        "class_type": "LoraLoader",
        "inputs": {
            "model": ["4", 0],
            "clip": ["4", 1],
            "lora_name": "watercolor.safetensors",
            "strength_model": 0.7,
            "strength_clip": 1,
        },
    }
    workflow["3"]["inputs"]["model"] = ["10", 0]
    workflow["6"]["inputs"]["clip"] = ["10", 1]
    plan = translate(workflow, MODELS, loras={"watercolor"})
    assert plan.fields["loras"] == [{"name": "watercolor", "scale": 0.7}]
    workflow["10"]["inputs"]["lora_name"] = "nope.safetensors"
    [error] = refused(workflow).as_comfy()["node_errors"]["10"]["errors"]
    assert error["type"] == "value_not_in_list"


def test_image_to_image_and_inpainting_read_their_uploads() -> None:
    workflow = example()
    workflow["10"] = {"class_type": "LoadImage", "inputs": {"image": "cat.png", "upload": "image"}}
    workflow["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    workflow["3"]["inputs"].update(latent_image=["11", 0], denoise=0.6)
    del workflow["5"]
    plan = translate(workflow, MODELS)
    assert (plan.fields["strength"], plan.mask) == (0.6, None)
    assert plan.image is not None
    assert plan.image.name == "cat.png"

    workflow["12"] = {
        "class_type": "SetLatentNoiseMask",
        "inputs": {"samples": ["11", 0], "mask": ["10", 1]},
    }
    workflow["3"]["inputs"]["latent_image"] = ["12", 0]
    plan = translate(workflow, MODELS)
    assert plan.mask is not None
    assert (plan.mask.name, plan.mask.channel) == ("cat.png", "alpha")


def test_a_latent_upscale_and_a_second_ksampler_are_the_hires_fix() -> None:
    workflow = example()
    workflow["3"]["inputs"]["steps"] = 3
    workflow["10"] = {
        "class_type": "LatentUpscale",
        "inputs": {
            "samples": ["3", 0],
            "upscale_method": "nearest-exact",
            "width": 128,
            "height": 96,
            "crop": "disabled",
        },
    }
    workflow["11"] = copy.deepcopy(workflow["3"])
    workflow["11"]["inputs"].update(latent_image=["10", 0], steps=2, denoise=0.5)
    workflow["8"]["inputs"]["samples"] = ["11", 0]
    plan = translate(workflow, MODELS)
    assert plan.fields["steps"] == 3
    assert plan.fields["hires"] == {
        "steps": 2,
        "strength": 0.5,
        "upscaler": "Latent (nearest-exact)",
        "width": 128,
        "height": 96,
    }
    assert plan.sampler_node == "11"
    workflow["11"]["inputs"]["positive"] = ["7", 0]
    [error] = refused(workflow).as_comfy()["node_errors"]["11"]["errors"]
    assert "same" in error["details"]


def test_ksampler_advanced_maps_where_it_runs_the_whole_schedule() -> None:
    workflow = example()
    inputs = workflow["3"]["inputs"]
    inputs["noise_seed"] = inputs.pop("seed")
    del inputs["denoise"]
    inputs.update(
        add_noise="enable", start_at_step=0, end_at_step=10000, return_with_leftover_noise="disable"
    )
    workflow["3"]["class_type"] = "KSamplerAdvanced"
    assert translate(workflow, MODELS).seed == 8566257
    inputs["start_at_step"] = 5
    [error] = refused(workflow).as_comfy()["node_errors"]["3"]["errors"]
    assert "whole schedule" in error["details"]
