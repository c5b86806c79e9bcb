"""The one error type of the export: its message is shown to the user as is, without a traceback."""


class ExportError(Exception):
    """Bad input or a failed check; nothing has been written when it is raised."""
