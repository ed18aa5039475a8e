"""Feature engine: the Training Service's features, in Polars, per coin, as of a tick.

Pure functions over Polars frames; no database, no HTTP.
"""

from features.columns import BASE_COLUMNS, PREFIX_SCHEMA, quote_ident
from features.engineering import compute, engineered_names, has_data_flags
from features.matrix import FeatureSpec, UnknownFeatureError, build_matrix
from features.running import empty_prefix, prefix_state

__all__ = [
    "BASE_COLUMNS",
    "PREFIX_SCHEMA",
    "FeatureSpec",
    "UnknownFeatureError",
    "build_matrix",
    "compute",
    "empty_prefix",
    "engineered_names",
    "has_data_flags",
    "prefix_state",
    "quote_ident",
]
