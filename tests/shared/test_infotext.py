"""A1111's infotext, written as A1111 writes it and read as A1111's parser reads it."""

from __future__ import annotations

from shared.infotext import checkpoint_sha256, infotext, parse, sampler_label, short_hash
from shared.jobs import GenerationParams
from shared.registry import ModelEntry
from tests.worker.test_inference import params as job_params


def params(**overrides: object) -> GenerationParams:
    return job_params(**{"height": 48, "sampler": "Euler a", **overrides})


def test_an_infotext_is_a1111s_three_parts() -> None:
    text = infotext(params(strength=0.6), 43, "Euler a", "sdxl", "0123456789")
    assert text == (
        "a red fox in the snow\n"
        "Negative prompt: blurry\n"
        "Steps: 2, Sampler: Euler a, CFG scale: 7.5, Seed: 43, Size: 64x48, "
        "Model hash: 0123456789, Model: sdxl, Denoising strength: 0.6"
    )


def test_what_is_unset_is_left_out() -> None:
    text = infotext(params(negative_prompt=None, sampler=None), 1, "Default", "sdxl", None)
    assert text.splitlines() == [
        "a red fox in the snow",
        "Steps: 2, Sampler: Default, CFG scale: 7.5, Seed: 1, Size: 64x48, Model: sdxl",
    ]
    assert sampler_label(params(sampler=None)) == "Default"


def test_it_reads_back_as_a1111_parses_it() -> None:
    parsed = parse(infotext(params(), 43, "Euler a", "sdxl", "0123456789"))

    assert parsed["Prompt"] == "a red fox in the snow"
    assert parsed["Negative prompt"] == "blurry"
    assert (parsed["Steps"], parsed["Sampler"], parsed["CFG scale"]) == ("2", "Euler a", "7.5")
    assert (parsed["Seed"], parsed["Size-1"], parsed["Size-2"]) == ("43", "64", "48")
    assert (parsed["Model hash"], parsed["Model"]) == ("0123456789", "sdxl")
    # A1111's defaults for what the text leaves out.
    assert (parsed["Clip skip"], parsed["Schedule type"], parsed["RNG"]) == (
        "1",
        "Automatic",
        "GPU",
    )


def test_a_value_with_a_comma_or_colon_is_quoted_and_reads_back_whole() -> None:
    text = infotext(params(), 1, "Euler", "ckpt: v2, pruned", None)
    assert text.endswith('Model: "ckpt: v2, pruned"')
    assert parse(text)["Model"] == "ckpt: v2, pruned"


def test_prompts_over_several_lines() -> None:
    text = infotext(
        params(prompt="line one\nline two", negative_prompt="bad\nworse"), 1, "Euler", "m", None
    )
    parsed = parse(text)
    assert (parsed["Prompt"], parsed["Negative prompt"]) == ("line one\nline two", "bad\nworse")


def test_a1111s_own_example() -> None:
    # From A1111's parse_generation_parameters docstring.
    parsed = parse(
        "girl with an artist's beret, determined, blue eyes\n"
        "Negative prompt: ugly, fat, obese\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, "
        "Model hash: 45dee52b"
    )
    assert parsed["Prompt"] == "girl with an artist's beret, determined, blue eyes"
    assert parsed["Negative prompt"] == "ugly, fat, obese"
    assert (parsed["Seed"], parsed["Size-1"], parsed["Model hash"]) == (
        "965400086",
        "512",
        "45dee52b",
    )


def test_text_that_is_not_an_infotext_is_all_prompt() -> None:
    # A last line with fewer than three settings is prompt text, as A1111 reads it.
    assert parse("just a caption: nothing else")["Prompt"] == "just a caption: nothing else"
    assert parse("")["Prompt"] == ""


def test_the_checkpoint_hash_is_of_the_registry_entry() -> None:
    entry = ModelEntry(id="org/model", type="sd")
    sha = checkpoint_sha256("sd", entry)
    assert len(sha) == 64
    assert short_hash(sha) == sha[:10]
    assert checkpoint_sha256("sd", ModelEntry(id="org/other", type="sd")) != sha
    assert checkpoint_sha256("sd2", entry) != sha


def test_schedule_hires_and_tiling_are_written_with_a1111s_keys() -> None:
    from shared.hires import HiresParams
    from shared.infotext import infotext, parse
    from shared.jobs import GenerationParams

    params = GenerationParams(
        prompt="a castle",
        negative_prompt=None,
        width=64,
        height=64,
        steps=2,
        guidance_scale=7.0,
        seed=5,
        num_images=1,
        sampler="DPM++ 2M",
        scheduler="sgm_uniform",
        hires=HiresParams(width=128, height=96, steps=3, strength=0.5, upscaler="Latent"),
        tiling=True,
    )
    parsed = parse(infotext(params, 5, "DPM++ 2M", "tiny-sd", "abc"))
    assert parsed["Schedule type"] == "SGM Uniform"
    assert (parsed["Hires resize-1"], parsed["Hires resize-2"]) == ("128", "96")
    assert (parsed["Hires steps"], parsed["Hires upscaler"]) == ("3", "Latent")
    assert (parsed["Denoising strength"], parsed["Tiling"]) == ("0.5", "True")
