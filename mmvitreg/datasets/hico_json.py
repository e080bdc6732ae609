"""Reading the HICO-DET JSON release (annotations, predictions) with one-sentence errors.

Pure (json only): used by the dataset and by the toolbox-free offline evaluator.
"""
import json
import os.path as osp
from typing import Optional

__all__ = ['read_json_list', 'HICOInputError']


class HICOInputError(ValueError):
    """A malformed value in a HICO-DET annotation or prediction file (or in the arrays of an
    evaluation): the message names the file or image and the offending field."""


def read_json_list(local_path: str, what: str, path: Optional[str] = None) -> list:
    """The JSON list of image entries in ``local_path`` (``path``: the name in messages), with
    one-sentence errors for a missing file, invalid JSON and a top level that is not a list."""
    path = local_path if path is None else path
    if not osp.isfile(local_path):
        raise FileNotFoundError(f'{what} not found: {path}')
    with open(local_path, 'r') as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f'{what} {path} is not valid JSON ({exc.msg} at line '
                             f'{exc.lineno}, column {exc.colno})') from None
    if not isinstance(data, list):
        raise ValueError(f'{what} {path} must contain a JSON list of image entries, got '
                         f'{type(data).__name__}')
    return data
