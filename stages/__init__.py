"""Stage runners: the Lightning-side glue that composes data, model, callbacks and trainer for each pipeline step.

Every runner is a function ``(cfg) -> dict[str, float]``; ``conf/stage/<name>.yaml`` names it in ``runner``.
"""
