"""The installed package version (a placeholder when running from a source tree)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bayesfm")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+local"
