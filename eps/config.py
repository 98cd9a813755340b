"""Deprecated alias of ``eps.settings`` (typed settings) and ``eps.params`` (the params of a run), kept so spaces
written for eps 0.1 (``from eps.config import Number, Settings``) keep importing. Nothing in eps imports it."""
from eps.params import TopParams, data_root, defaults, load_params, params_model  # noqa: F401
from eps.settings import (FLOAT32_MAX, MAX_PARAMS_BYTES, Number, Settings, deep_update, error_lines,  # noqa: F401
                          read_yaml, section)

_error_lines = error_lines
