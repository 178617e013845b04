"""OrderFeed without I/O: news wakes a watcher once, a repeat of an announced event or an older position does
not, and a watcher that reads between news and waiting misses nothing."""

from __future__ import annotations

import asyncio
import datetime as dt

from voltcloud.ordering.lifecycle import OrderFeed

T0 = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


async def test_news_after_the_generation_read_is_not_missed() -> None:
    feed = OrderFeed()
    seen = feed.watch("ord-1")
    feed.notify("ord-1", 1)  # arrives while the watcher is still reading the database
    assert await asyncio.wait_for(feed.changed("ord-1", seen), 1) == seen + 1


async def test_a_repeated_event_and_an_older_position_are_not_news() -> None:
    feed = OrderFeed()
    seen = feed.watch("ord-1")
    feed.notify("ord-1", 3)  # this process's own commit
    feed.notify("ord-1", 3)  # the feed's copy of it
    feed.notify("ord-1", 2)
    assert feed.generation("ord-1") == seen + 1
    feed.move("ord-1", 1.0, 2.0, None, T0 + dt.timedelta(seconds=5))
    feed.move("ord-1", 9.0, 9.0, None, T0)  # delivered late, reported earlier
    assert feed.position("ord-1") == (1.0, 2.0, None)
    assert feed.generation("ord-1") == seen + 2


async def test_a_waiting_watcher_wakes_on_news_and_unwatched_orders_keep_nothing() -> None:
    feed = OrderFeed()
    seen = feed.watch("ord-1")
    waiter = asyncio.create_task(feed.changed("ord-1", seen))
    await asyncio.sleep(0)
    assert not waiter.done()
    feed.notify("ord-2", 1)  # nobody watches it
    await asyncio.sleep(0)
    assert not waiter.done()
    feed.notify("ord-1", 1)
    assert await asyncio.wait_for(waiter, 1) == seen + 1
    feed.forget("ord-1")
    feed.move("ord-1", 1.0, 1.0, None, T0)
    assert feed.position("ord-1") is None and feed.generation("ord-2") == 0
