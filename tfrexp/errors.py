"""Errors a user can act on. The entrypoints print their message as one line, without a traceback."""


class TfrexpError(Exception):
    """Base of the errors whose message alone tells the user what to fix."""


class ConfigError(TfrexpError, ValueError):
    """A config value that cannot work; the message names the key and the value."""


class DataError(TfrexpError):
    """Source data that is missing, malformed or does not match what the config promises."""


class RecordsError(TfrexpError):
    """TFRecords that are missing, corrupt or disagree with their manifest."""


class TrainingDiverged(TfrexpError):
    """The loss became NaN or infinite."""
