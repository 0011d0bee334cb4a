"""darkroom's user-facing tools: the `darkroom` command, the local all-in-one
stack, the small HTTP client and the worker pool supervisor.

The top floor: it may import `api`, `worker` and `shared`; none of them imports it.
"""
