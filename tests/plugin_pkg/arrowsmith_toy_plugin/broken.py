"""A plugin whose import fails, as a plugin with a missing dependency would."""

import arrowsmith_toy_plugin_missing_dependency  # noqa: F401

load_model = None
