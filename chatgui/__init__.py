"""chat clients: the client session, the terminal client and the desktop window."""
