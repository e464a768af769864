"""OpenTelemetry metrics of a short load against the embedded demo server (needs the ``otel``
extra and opentelemetry-sdk): 50 concurrent GETs through a pool of at most 4 connections, then
every metric asyncpool.otel recorded, read with the SDK's in-memory reader.

    python examples/otel_metrics.py [--backend trio]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reuse import serve

import asyncpool
from asyncpool.otel import instrument


async def main() -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    async with serve() as server, asyncpool.Transport(max_conns_per_host=4) as transport:
        instrument(transport, meter_provider=meters)

        async def get() -> None:
            response = await transport.round_trip(asyncpool.Request("GET", server.url + "/"))
            await response.aread()

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(get)
        data = reader.get_metrics_data()  # while the connections are still open (idle)
    meters.shutdown()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                print(f"{metric.name} ({metric.unit})")
                for point in metric.data.data_points:
                    attributes = ", ".join(f"{k}={v}" for k, v in sorted(point.attributes.items()))
                    if hasattr(point, "count"):
                        value = f"count={point.count} sum={point.sum:.4f}s"
                    else:
                        value = f"value={point.value}"
                    print(f"  {value}  {{{attributes}}}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    anyio.run(main, backend=parser.parse_args().backend)
