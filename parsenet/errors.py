"""Exceptions for mistakes a user can make; the command-line tools print them as one line."""


class ParsenetError(Exception):
    """A problem the user can fix (bad path, bad file, mismatching checkpoint, bad setting)."""


class DataError(ParsenetError):
    """A dataset on disk is missing, incomplete or malformed."""


class CheckpointError(ParsenetError):
    """A checkpoint cannot be read or does not fit the requested model or dataset."""


class ConfigError(ParsenetError):
    """A configuration value is missing or invalid."""
