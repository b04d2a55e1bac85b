"""A second line beside the bare floor: the same echo as a Faust app (take_events batches).

The worker ran on Faust until its per-event path and its commit-interval
transactions stood in the way (see README); this echo keeps Faust's own cost
visible in the same run.  Needs the `bench` extra (faust-streaming).
"""
from __future__ import annotations

import sys
from typing import Any

import faust
from echo_bare import echo

from holdgate.settings import Settings


def main() -> None:
    s = Settings.from_env()
    app = faust.App(s.app_id, broker=f"kafka://{s.bootstrap}", datadir=s.datadir,
                    store="memory://", web_enabled=False, topic_allow_declare=False,
                    topic_partitions=s.partitions, producer_linger_ms=0,
                    consumer_auto_offset_reset="latest", key_serializer="raw",
                    value_serializer="raw")
    actions = app.topic(s.actions_topic, key_serializer="raw", value_serializer="raw")
    verdicts = app.topic(s.verdicts_topic, key_serializer="raw", value_serializer="raw")

    @app.agent(actions)
    async def answer(stream: Any) -> None:
        async for events in stream.take_events(s.batch_max, within=s.batch_within):
            for e in events:
                await verdicts.send(key=e.message.key, value=echo(e.message.value),
                                    partition=e.message.partition)

    worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    sys.exit(main())
