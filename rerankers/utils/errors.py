"""The base class of every error caused by user input (bad file, unknown name, bad argument).

The CLI catches :class:`RerankersError` and prints one line, ``rerank: error: <message>``, with exit
status 2 instead of a traceback. Library code raises subclasses of it wherever the cause is the
user's input; programming errors stay ordinary exceptions.
"""


class RerankersError(Exception):
    """An error the user can fix (bad input file, unknown dataset or metric, bad argument)."""
