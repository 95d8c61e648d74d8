"""The one exception type for mistakes a user can fix.

Anything raised as :class:`UserError` reaches the command line as a single line on stderr and exit
status 2, with no traceback. Messages name the field, file or value at fault and say what is allowed.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: a config field, a data file, a checkpoint, a world size."""

    exit_code = 2
