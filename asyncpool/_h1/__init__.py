"""HTTP/1.1: the protocol behind one interface with two parsers (``protocol``: h11, httptools;
no I/O) and the pooled connection that speaks it (``connection``: a reader and a writer task).

The parsers' names and the default are here, not in ``protocol``, for the Transport to check its
options without importing h11: ``protocol`` and ``connection`` load with the first dial."""

__all__ = ["PARSERS", "default_parser"]

PARSERS = ("h11", "httptools")


def default_parser() -> str:
    """httptools when installed (the ``speedups`` extra), else h11."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"
