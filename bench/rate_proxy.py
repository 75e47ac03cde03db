#!/usr/bin/env python3
"""A TCP proxy whose download direction is one link of RATE: the bytes of
every connection from the upstream to the clients share one token bucket,
as the clients of a real network link share its bandwidth. Uploads are not
limited. For bench/registry.sh's RATE mode.

    rate_proxy.py LISTEN_PORT UPSTREAM_PORT RATE

RATE: bits per second, with an optional k, m or g suffix and "bit"
(100mbit, 1gbit, 500k). Listens on 127.0.0.1, forwards to 127.0.0.1.
Prints "ready" once listening.
"""
import asyncio
import re
import sys
import time

CHUNK = 64 * 1024


def parse_rate(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)(?:bit)?", text.strip().lower())
    if not m:
        raise SystemExit(f"rate_proxy: cannot read the rate {text!r} (e.g. 100mbit)")
    scale = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]
    return float(m.group(1)) * scale / 8  # bytes per second


class Link:
    """The shared bucket: each chunk is sent once the link is free for it."""

    def __init__(self, rate):
        self.rate = rate
        self.free_at = time.monotonic()

    async def take(self, n):
        now = time.monotonic()
        start = max(now, self.free_at)
        self.free_at = start + n / self.rate
        if self.free_at > now:
            await asyncio.sleep(self.free_at - now)


async def pump(reader, writer, link):
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            if link is not None:
                await link.take(len(data))
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main():
    listen, upstream, rate = int(sys.argv[1]), int(sys.argv[2]), parse_rate(sys.argv[3])
    link = Link(rate)

    async def handle(client_r, client_w):
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", upstream)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pump(client_r, up_w, None), pump(up_r, client_w, link))

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
