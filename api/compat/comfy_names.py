"""ComfyUI's names for samplers, schedulers and upscale methods, as darkroom's.

ComfyUI names its k-diffusion samplers by function (`dpmpp_2m`, `euler_ancestral`);
darkroom's table (shared.samplers) uses AUTOMATIC1111's names for the same
algorithms. What diffusers cannot run (`dpm_fast`, `dpmpp_2s_ancestral`,
`res_multistep`, ...) is not listed in /object_info and refused by name.
"""

from __future__ import annotations

# ComfyUI's sampler_name -> darkroom's sampler (its `_gpu` variants differ only in
# where ComfyUI draws the SDE noise).
SAMPLERS = {
    "euler": "Euler",
    "euler_ancestral": "Euler a",
    "heun": "Heun",
    "dpm_2": "DPM2",
    "dpm_2_ancestral": "DPM2 a",
    "lms": "LMS",
    "dpmpp_sde": "DPM++ SDE",
    "dpmpp_sde_gpu": "DPM++ SDE",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_sde": "DPM++ 2M SDE",
    "dpmpp_2m_sde_gpu": "DPM++ 2M SDE",
    "dpmpp_2m_sde_heun": "DPM++ 2M SDE Heun",
    "dpmpp_2m_sde_heun_gpu": "DPM++ 2M SDE Heun",
    "dpmpp_3m_sde": "DPM++ 3M SDE",
    "dpmpp_3m_sde_gpu": "DPM++ 3M SDE",
    "ddim": "DDIM",
    "uni_pc": "UniPC",
    "uni_pc_bh2": "UniPC",
    "lcm": "LCM",
}
# ComfyUI's scheduler -> darkroom's schedule (shared.samplers, by A1111 id).
SCHEDULERS = {
    "normal": "normal",
    "karras": "karras",
    "exponential": "exponential",
    "sgm_uniform": "sgm_uniform",
    "simple": "simple",
    "ddim_uniform": "ddim",
    "beta": "beta",
}
# Schedules that only space the timesteps: a flow model's scheduler (FLUX, SD3) runs
# its own spacing, which is what ComfyUI's `simple` and `normal` give it there.
SPACING_ONLY = frozenset({"normal", "simple", "sgm_uniform", "ddim"})
# LatentUpscale's upscale_method -> the hires fix's latent upscaler.
LATENT_UPSCALE_METHODS = {
    "nearest-exact": "Latent (nearest-exact)",
    "bilinear": "Latent",
    "area": "Latent (antialiased)",
    "bicubic": "Latent (bicubic)",
    # Spherical interpolation: bilinear is the nearest darkroom has.
    "bislerp": "Latent",
}
