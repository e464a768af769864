"""HTTP/1.1: the protocol behind one interface with two parsers (``protocol``: h11, httptools;
no I/O) and the pooled connection that speaks it (``connection``: a reader and a writer task)."""
