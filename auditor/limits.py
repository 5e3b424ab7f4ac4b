"""Input limits the command line shows as defaults, in a module that imports nothing (auditor.dataset loads polars:
importing it for a default would delay every command's first line)."""

DEFAULT_MAX_INPUT_GIB = 32.0  # decompressed bytes read from one input; --max-input-gib
