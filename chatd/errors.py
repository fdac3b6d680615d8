"""Errors the server reports to an operator (not to chat clients)."""


class StartupError(Exception):
    """The server cannot start: the message is one line, fit for a person.

    Raised for a port in use, a live server already owning the control socket
    or pid file, an unreadable database, and the like. The CLI prints it and
    exits 1 instead of showing a traceback.
    """
