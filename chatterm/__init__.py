"""``chat``: the terminal client, full screen on a terminal and lines in a pipe."""
