"""Foreign dialects of image generation, spoken over darkroom's own jobs.

`openai_images` serves OpenAI's Images API under /v1; `a1111` serves
AUTOMATIC1111's /sdapi/v1. Each translates a request into `JobCreate`s, hands
them to the core (api.submission: validation, limits, queueing, ownership),
waits for them without holding a thread (`jobs`), and translates the finished
jobs back. Nothing here generates, validates limits or queues on its own.
"""

# The path prefixes of the dialects: api.errors shapes the errors under each as
# its clients expect them.
OPENAI_PREFIX = "/v1"
A1111_PREFIX = "/sdapi/v1"
