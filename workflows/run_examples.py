"""Run the example workflows end to end and print their outputs.

Usage: ``python -m workflows.run_examples``; the backend and concurrency come from
the repository's ``openworkflow.config.py`` (``OPENWORKFLOW_BACKEND_URL`` overrides
the backend, as for every command).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from openworkflow import OpenWorkflow
from openworkflow.config import load_config
from openworkflow.connect import open_backend
from openworkflow.settings import resolve_settings
from workflows.approval import approval_signal, approve_expense
from workflows.fan_out import resize_album, resize_image
from workflows.hello_world import hello_world
from workflows.process_order import process_order
from workflows.summarize_report import summarize_report
from workflows.trip_booking import trip_booking

WORKFLOWS = [
    hello_world,
    process_order,
    approve_expense,
    resize_album,
    resize_image,
    trip_booking,
    summarize_report,
]

SETTINGS = resolve_settings(load_config(Path(__file__).parent.parent / "openworkflow.config.py"))


async def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    async with OpenWorkflow(open_backend(SETTINGS)) as ow:
        hello = await ow.run(hello_world, {"name": "OpenWorkflow"})
        order = await ow.run(
            process_order,
            {
                "order_id": "A-1001",
                "items": [
                    {"sku": "book", "quantity": 2, "unit_price": 12.5},
                    {"sku": "pen", "quantity": 3, "unit_price": 1.2},
                ],
            },
        )
        expense = await ow.run(approve_expense, {"expense_id": "E-7", "amount_cents": 4200})
        album = await ow.run(resize_album, ["cat.png", "dog.png", "owl.png"])
        # No cars in Lisbon: the hotel and the flight are booked, then canceled.
        trip = await ow.run(trip_booking, {"trip_id": "T-42", "destination": "Lisbon"})
        report = await ow.run(
            summarize_report,
            {
                "title": "Quarterly report",
                "pages": [
                    "Revenue grew in every region this quarter, led by Europe.",
                    "Costs stayed flat while headcount grew by four people.",
                    "Next quarter we open the Lisbon office and hire two engineers.",
                ],
            },
        )
        print(f"enqueued hello-world run {hello.id} and process-order run {order.id}")
        async with ow.new_worker(WORKFLOWS, concurrency=SETTINGS.concurrency):
            # The approval run parks on its signal; answer it once it waits.
            while not await ow.send_signal(approval_signal("E-7"), {"approved": True, "by": "ana"}):
                await asyncio.sleep(0.05)
            # Read the report's progress stream from its first item as it grows.
            async for item in report.stream("progress"):
                print(f"summarize-report progress {item['page']}/{item['of']}: {item['summary']}")
            runs = (
                ("hello-world", hello),
                ("process-order", order),
                ("approve-expense", expense),
                ("resize-album", album),
                ("trip-booking", trip),
                ("summarize-report", report),
            )
            for name, handle in runs:
                output = await handle.result(timeout="30s")
                print(f"{name} completed: {json.dumps(output)}")
                steps = await ow.list_steps(handle.id)
                for attempt in steps.data:
                    print(f"  step {attempt.step_name:<18} {attempt.kind:<11} {attempt.status}")
        counts = await ow.counts()
        print(f"runs: {counts}")
        await ow.backend.stop()


if __name__ == "__main__":
    asyncio.run(main())
