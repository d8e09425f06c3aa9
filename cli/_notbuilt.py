from arrowsmith.commands.errors import UsageError


def not_built(stage: str) -> None:
    raise UsageError(f"'arrowsmith {stage}' is not built yet in this version")
