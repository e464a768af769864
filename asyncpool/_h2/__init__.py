"""HTTP/2: the ``h2`` state machine as a client pool configures it (``protocol``; no I/O) and the
shared, multiplexed connection that speaks it (``connection``)."""
